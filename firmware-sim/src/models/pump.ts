/**
 * A booster pump filling a 100 l tank that is drawn from at a varying rate: it starts below 30 %
 * and stops above 80 %. Now and then the supply runs dry while it runs: the flow collapses, the
 * pump raises `E17` (dry run), stops, and tries again every 30 s until water is back (CLEAR). Worn
 * bearings heat the motor now and then: above 95 °C it raises `E21` and stops until below 75 °C.
 */
import type { Random } from '../random.js'
import { approach, fixed, happens, type DeviceModel, type ModelEvent, type ModelInstance } from './model.js'

const TANK_L = 100
const START_BELOW = 30
const STOP_ABOVE = 80
const PUMP_L_MIN = 60
const DRY_MEAN_MS = 400_000
const DRY_DETECT_MS = 3_000
const RETRY_MS = 30_000
const RETRY_RUN_MS = 5_000
const WEAR_MEAN_MS = 1_800_000
const E21_ABOVE = 95
const E21_CLEAR_BELOW = 75

class Pump implements ModelInstance {
  private running = false
  private level: number
  private demand: number
  private pressure = 0.5
  private flow = 0
  private motor: number
  // the supply is dry for this long; the pump is in E17 and waits this long to retry
  private dryMs = 0
  private lowFlowMs = 0
  private e17 = false
  private retryMs = 0
  private retryRunMs = 0
  private wearMs = 0
  private e21 = false

  constructor (private readonly random: Random) {
    this.level = random.range(35, 75)
    this.demand = random.range(5, 35)
    this.motor = random.range(20, 30)
  }

  tick (dtMs: number): ModelEvent[] {
    const r = this.random
    const events: ModelEvent[] = []
    const wasRunning = this.running
    const dtMin = dtMs / 60_000
    // demand wanders; the supply runs dry now and then while the pump runs
    this.demand = Math.min(40, Math.max(0, this.demand + r.normal(0.05 * Math.sqrt(dtMs))))
    if (this.dryMs > 0) this.dryMs = Math.max(0, this.dryMs - dtMs)
    else if (this.running && happens(r, DRY_MEAN_MS, dtMs)) this.dryMs = 20_000 + r.exponential(60_000)
    if (this.wearMs > 0) this.wearMs = Math.max(0, this.wearMs - dtMs)
    else if (happens(r, WEAR_MEAN_MS, dtMs)) this.wearMs = r.range(120_000, 400_000)
    // control: level hysteresis, unless a fault holds the pump
    if (this.e17) {
      if (this.retryRunMs > 0) {
        this.retryRunMs -= dtMs
        if (this.retryRunMs <= 0) {
          if (this.flow < 5) {
            this.running = false
            this.retryMs = RETRY_MS
          } else {
            this.e17 = false
            this.lowFlowMs = 0
            events.push({ kind: 'clear', code: 'E17', fields: { flow: fixed(this.flow, 1) } })
          }
        }
      } else {
        this.retryMs -= dtMs
        if (this.retryMs <= 0 && !this.e21) {
          this.running = true
          this.retryRunMs = RETRY_RUN_MS
        }
      }
    } else if (!this.e21) {
      if (this.level < START_BELOW) this.running = true
      else if (this.level > STOP_ABOVE) this.running = false
    }
    // hydraulics and the motor
    const pumping = this.running && this.dryMs === 0
    const flowTarget = pumping ? PUMP_L_MIN : 0
    this.flow = Math.max(0, approach(this.flow, flowTarget, 800, dtMs) + (pumping ? r.normal(1.5) : 0))
    const pressureTarget = pumping ? 4 : this.running ? 0.2 : 0.5
    this.pressure = Math.max(0, approach(this.pressure, pressureTarget, 600, dtMs) + r.normal(0.03))
    this.level = Math.min(100, Math.max(0, this.level + ((this.flow - this.demand) * dtMin * 100) / TANK_L))
    const motorTarget = !this.running ? 25 : this.wearMs > 0 ? 115 : this.dryMs > 0 ? 85 : 65
    this.motor = approach(this.motor, motorTarget, 90_000, dtMs) + r.normal(0.05)
    // protection: dry run (E17) and overtemperature (E21)
    if (this.running && !this.e17 && this.flow < 5) this.lowFlowMs += dtMs
    else this.lowFlowMs = 0
    if (!this.e17 && this.lowFlowMs >= DRY_DETECT_MS) {
      this.e17 = true
      this.running = false
      this.retryMs = RETRY_MS
      this.retryRunMs = 0
      events.push({ kind: 'alarm', code: 'E17', fields: { text: 'dry run', flow: fixed(this.flow, 1), pressure: fixed(this.pressure, 2) } })
    }
    if (!this.e21 && this.motor > E21_ABOVE) {
      this.e21 = true
      this.running = false
      events.push({ kind: 'alarm', code: 'E21', fields: { text: 'motor overtemperature', motor: fixed(this.motor, 1) } })
    } else if (this.e21 && this.motor < E21_CLEAR_BELOW) {
      this.e21 = false
      events.push({ kind: 'clear', code: 'E21', fields: { motor: fixed(this.motor, 1) } })
    }
    if (this.running !== wasRunning) events.push({ kind: 'changed' })
    return events
  }

  state (): Record<string, string> {
    return {
      run: this.running ? 'on' : 'off',
      pressure: fixed(this.pressure, 2),
      flow: fixed(this.flow, 1),
      level: fixed(this.level, 1),
      motor: fixed(this.motor, 1),
      fault: this.e17 ? 'E17' : this.e21 ? 'E21' : 'none'
    }
  }

  activeAlarms (): string[] {
    return [...(this.e17 ? ['E17'] : []), ...(this.e21 ? ['E21'] : [])]
  }
}

export const pump: DeviceModel = {
  name: 'pump',
  prefix: 'PU',
  fw: '4.0.2',
  description: 'booster pump filling a tank: runs on level, pressure, flow, motor temperature, dry-run and overtemperature faults',
  fields: [
    { name: 'run', description: 'on | off (starts below 30 % tank level, stops above 80 %)' },
    { name: 'pressure', description: 'outlet pressure, bar, 2 decimals' },
    { name: 'flow', description: 'flow, l/min, 1 decimal' },
    { name: 'level', description: 'tank level, %, 1 decimal' },
    { name: 'motor', description: 'motor temperature, °C, 1 decimal' },
    { name: 'fault', description: 'none | E17 | E21' }
  ],
  alarms: [
    { name: 'E17', description: 'dry run: flow below 5 l/min for 3 s while running; ALARM fields text, flow, pressure; the pump stops and retries every 30 s; CLEAR (field flow) when water is back' },
    { name: 'E21', description: `motor overtemperature above ${E21_ABOVE} °C; ALARM fields text, motor; the pump stops; CLEAR (field motor) below ${E21_CLEAR_BELOW} °C` }
  ],
  create: (random) => new Pump(random)
}

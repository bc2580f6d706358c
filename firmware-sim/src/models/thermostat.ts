/**
 * A room thermostat: the temperature drifts toward the room's ambient with the heater off and
 * rises with it on; the controller switches the heater with hysteresis around the setpoint, which
 * a user changes now and then. Once in a while the heater relay sticks closed, the room overheats
 * and the thermostat raises `overheat` until it has cooled down again.
 */
import type { Random } from '../random.js'
import { approach, fixed, happens, type DeviceModel, type ModelEvent, type ModelInstance } from './model.js'

/** Above this the thermostat raises `overheat`; below OVERHEAT_CLEAR it clears it. */
export const OVERHEAT_LIMIT = 28
const OVERHEAT_CLEAR = 27
const HYSTERESIS = 0.3
// the room's time constant toward ambient, and the heater's: with the heater on the room heads
// for HEATER_TARGET
const LOSS_TAU_MS = 600_000
const HEATER_TARGET = 45
const SENSOR_NOISE = 0.03
const SETPOINT_CHANGE_MEAN_MS = 1_200_000
const RELAY_STICK_MEAN_MS = 1_800_000
const RELAY_STUCK_MEAN_MS = 300_000
const SETPOINTS = [18, 18.5, 19, 19.5, 20, 20.5, 21, 21.5, 22, 22.5, 23, 23.5, 24]

class Thermostat implements ModelInstance {
  private ambient: number
  private temp: number
  private measured: number
  private setpoint: number
  private heaterCommand = false
  private stuckForMs = 0
  private overheat = false

  constructor (private readonly random: Random) {
    this.ambient = random.range(8, 16)
    this.setpoint = random.pick(SETPOINTS)
    this.temp = this.setpoint + random.range(-2, 1)
    this.measured = this.temp
    this.heaterCommand = this.temp < this.setpoint
  }

  private get heaterOn (): boolean {
    return this.heaterCommand || this.stuckForMs > 0
  }

  tick (dtMs: number): ModelEvent[] {
    const r = this.random
    const events: ModelEvent[] = []
    const wasHeating = this.heaterOn
    // physics: the room loses heat toward ambient, and gains it from the heater
    this.ambient = Math.min(18, Math.max(4, this.ambient + r.normal(0.002 * Math.sqrt(dtMs))))
    const target = this.heaterOn ? HEATER_TARGET : this.ambient
    this.temp = approach(this.temp, target, LOSS_TAU_MS, dtMs)
    this.measured = this.temp + r.normal(SENSOR_NOISE)
    // a user changes the setpoint
    if (happens(r, SETPOINT_CHANGE_MEAN_MS, dtMs)) {
      // a step of 0.5 to 2 degrees, up or down
      const others = SETPOINTS.filter((s) => s !== this.setpoint && Math.abs(s - this.setpoint) <= 2)
      this.setpoint = r.pick(others)
      events.push({ kind: 'changed' })
    }
    // the relay sticks closed now and then, and frees itself later
    if (this.stuckForMs > 0) {
      this.stuckForMs = Math.max(0, this.stuckForMs - dtMs)
      if (this.stuckForMs === 0) events.push({ kind: 'changed' })
    } else if (happens(r, RELAY_STICK_MEAN_MS, dtMs)) {
      this.stuckForMs = 60_000 + r.exponential(RELAY_STUCK_MEAN_MS)
      events.push({ kind: 'changed' })
    }
    // the controller, with hysteresis
    if (this.measured < this.setpoint - HYSTERESIS) this.heaterCommand = true
    else if (this.measured > this.setpoint + HYSTERESIS) this.heaterCommand = false
    if (this.heaterOn !== wasHeating) events.push({ kind: 'changed' })
    // the alarm, with hysteresis
    if (!this.overheat && this.measured > OVERHEAT_LIMIT) {
      this.overheat = true
      events.push({ kind: 'alarm', code: 'overheat', fields: { temp: fixed(this.measured, 2), limit: fixed(OVERHEAT_LIMIT, 2) } })
    } else if (this.overheat && this.measured < OVERHEAT_CLEAR) {
      this.overheat = false
      events.push({ kind: 'clear', code: 'overheat', fields: { temp: fixed(this.measured, 2) } })
    }
    return events
  }

  state (): Record<string, string> {
    return {
      temp: fixed(this.measured, 2),
      setpoint: fixed(this.setpoint, 2),
      heater: this.heaterOn ? 'on' : 'off',
      relay: this.stuckForMs > 0 ? 'stuck' : 'ok'
    }
  }

  activeAlarms (): string[] {
    return this.overheat ? ['overheat'] : []
  }
}

export const thermostat: DeviceModel = {
  name: 'thermostat',
  prefix: 'TH',
  fw: '2.3.1',
  description: 'room thermostat: temperature toward a setpoint, heater with hysteresis, overheat alarm',
  fields: [
    { name: 'temp', description: 'measured room temperature, °C, 2 decimals' },
    { name: 'setpoint', description: 'target temperature, °C, 2 decimals (a user changes it now and then)' },
    { name: 'heater', description: 'on | off (on below setpoint - 0.3, off above setpoint + 0.3)' },
    { name: 'relay', description: 'ok | stuck (a stuck relay heats whatever the controller says)' }
  ],
  alarms: [
    { name: 'overheat', description: `temp above ${OVERHEAT_LIMIT}.00 °C; ALARM fields temp, limit; CLEAR (field temp) below ${OVERHEAT_CLEAR}.00 °C` }
  ],
  create: (random) => new Thermostat(random)
}

/**
 * A door with an electronic lock. People arrive now and then: the lock opens, the door opens and
 * closes, and the lock locks itself again a few seconds later. Rarely the door is forced open
 * while locked (`forced`, cleared when it closes), or someone opens the lock's cover (`tamper`,
 * cleared when it is shut). The battery runs down slowly; below 20 % the lock raises
 * `battery-low`, cleared when the battery is replaced.
 */
import type { Random } from '../random.js'
import { fixed, happens, type DeviceModel, type ModelEvent, type ModelInstance } from './model.js'

const ARRIVAL_MEAN_MS = 30_000
const FORCED_MEAN_MS = 1_200_000
const TAMPER_MEAN_MS = 900_000
const AUTO_LOCK_MS = 5_000
const BATTERY_DRAIN_MEAN_MS = 60_000
const BATTERY_LOW = 20
const BATTERY_REPLACE_MEAN_MS = 600_000

type Phase = 'idle' | 'unlocked' | 'open' | 'closed'

class Door implements ModelInstance {
  private open = false
  private locked = true
  private phase: Phase = 'idle'
  // time left in the current phase of a visit (unlocked -> open -> closed -> locked)
  private phaseMs = 0
  private forced = false
  private tamperMs = 0
  private battery: number
  private batteryLow = false
  private opens = 0

  constructor (private readonly random: Random) {
    this.battery = 25 + random.int(76)
  }

  tick (dtMs: number): ModelEvent[] {
    const r = this.random
    const events: ModelEvent[] = []
    const changed = (): void => { events.push({ kind: 'changed' }) }
    // a visit: unlock, open, close, lock
    if (this.phase === 'idle') {
      if (happens(r, ARRIVAL_MEAN_MS, dtMs)) {
        this.locked = false
        this.phase = 'unlocked'
        this.phaseMs = r.range(1_000, 3_000)
        changed()
      } else if (!this.open && happens(r, FORCED_MEAN_MS, dtMs)) {
        // forced open while locked
        this.open = true
        this.opens++
        this.forced = true
        this.phase = 'open'
        this.phaseMs = r.range(5_000, 20_000)
        changed()
        events.push({ kind: 'alarm', code: 'forced', fields: { door: 'open', lock: this.locked ? 'locked' : 'unlocked' } })
      }
    } else {
      this.phaseMs -= dtMs
      if (this.phaseMs <= 0) {
        if (this.phase === 'unlocked') {
          this.open = true
          this.opens++
          this.phase = 'open'
          this.phaseMs = r.range(2_000, 10_000)
        } else if (this.phase === 'open') {
          this.open = false
          this.phase = 'closed'
          this.phaseMs = AUTO_LOCK_MS
          if (this.forced) {
            this.forced = false
            events.push({ kind: 'clear', code: 'forced', fields: {} })
          }
        } else {
          this.locked = true
          this.phase = 'idle'
        }
        changed()
      }
    }
    // the cover
    if (this.tamperMs > 0) {
      this.tamperMs -= dtMs
      if (this.tamperMs <= 0) {
        this.tamperMs = 0
        changed()
        events.push({ kind: 'clear', code: 'tamper', fields: {} })
      }
    } else if (happens(r, TAMPER_MEAN_MS, dtMs)) {
      this.tamperMs = r.range(10_000, 60_000)
      changed()
      events.push({ kind: 'alarm', code: 'tamper', fields: { sensor: 'cover' } })
    }
    // the battery
    if (this.battery > 0 && happens(r, BATTERY_DRAIN_MEAN_MS, dtMs)) {
      this.battery--
      changed()
    }
    if (!this.batteryLow && this.battery < BATTERY_LOW) {
      this.batteryLow = true
      events.push({ kind: 'alarm', code: 'battery-low', fields: { battery: String(this.battery) } })
    } else if (this.batteryLow && happens(r, BATTERY_REPLACE_MEAN_MS, dtMs)) {
      this.battery = 100
      this.batteryLow = false
      changed()
      events.push({ kind: 'clear', code: 'battery-low', fields: { battery: '100' } })
    }
    return events
  }

  state (): Record<string, string> {
    return {
      door: this.open ? 'open' : 'closed',
      lock: this.locked ? 'locked' : 'unlocked',
      cover: this.tamperMs > 0 ? 'open' : 'closed',
      battery: fixed(this.battery, 0),
      opens: String(this.opens)
    }
  }

  activeAlarms (): string[] {
    return [...(this.forced ? ['forced'] : []), ...(this.tamperMs > 0 ? ['tamper'] : []), ...(this.batteryLow ? ['battery-low'] : [])]
  }
}

export const door: DeviceModel = {
  name: 'door',
  prefix: 'DL',
  fw: '1.8.0',
  description: 'door with an electronic lock: visits (unlock, open, close, auto-lock), forced-open and tamper alarms, battery',
  fields: [
    { name: 'door', description: 'open | closed' },
    { name: 'lock', description: 'locked | unlocked (locks itself 5 s after the door closes)' },
    { name: 'cover', description: 'closed | open (the lock\'s cover; open raises tamper)' },
    { name: 'battery', description: 'battery charge, %, whole number' },
    { name: 'opens', description: 'times the door opened since the simulation started' }
  ],
  alarms: [
    { name: 'forced', description: 'the door was opened while locked; ALARM fields door, lock; CLEAR when it closes' },
    { name: 'tamper', description: 'the lock\'s cover was opened; ALARM field sensor=cover; CLEAR when it is shut' },
    { name: 'battery-low', description: `battery below ${BATTERY_LOW} %; ALARM field battery; CLEAR (battery=100) when replaced` }
  ],
  create: (random) => new Door(random)
}

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { encodeFrame } from '@herald/device-protocol'
import { Random } from '../random.js'
import { MODELS, type DeviceModel, type ModelEvent } from './index.js'

interface Trace { states: Array<Record<string, string>>, events: Array<ModelEvent & { t: number }> }

// runs a model for `ms` of simulated time in 100 ms ticks, sampling its state every second
function trace (model: DeviceModel, seed: number, ms: number): Trace {
  const m = model.create(new Random(seed, 'test', model.name))
  const out: Trace = { states: [], events: [] }
  for (let t = 100; t <= ms; t += 100) {
    for (const e of m.tick(100)) out.events.push({ ...e, t })
    if (t % 1000 === 0) out.states.push(m.state())
  }
  return out
}

const HOUR = 3_600_000

describe('device models', () => {
  for (const model of Object.values(MODELS)) {
    describe(model.name, () => {
      const long = trace(model, 1, 6 * HOUR)

      it('is deterministic: same seed and ticks, same states and events; another seed differs', () => {
        expect(trace(model, 42, HOUR)).toEqual(trace(model, 42, HOUR))
        expect(trace(model, 43, HOUR).states).not.toEqual(trace(model, 42, HOUR).states)
      })

      it('reports exactly its documented fields, in order, each frame encodable', () => {
        for (const s of long.states) {
          expect(Object.keys(s)).toEqual(model.fields.map((f) => f.name))
          expect(encodeFrame({ type: 'STATE', boot: 9_999_999, seq: 9_999_999, code: null, fields: { prev: '9999999:9999999', ...s } }).length).toBeLessThan(200)
        }
        for (const e of long.events) {
          if (e.kind !== 'changed') encodeFrame({ type: e.kind === 'alarm' ? 'ALARM' : 'CLEAR', boot: 1, seq: 1, code: e.code, fields: e.fields })
        }
      })

      it('raises each documented alarm code and clears it, alternating, in six hours', () => {
        const codes = model.alarms.map((a) => a.name)
        for (const code of codes) {
          const seq = long.events.filter((e) => e.kind !== 'changed' && e.code === code).map((e) => e.kind)
          expect(seq.length, `${model.name} ${code}`).toBeGreaterThanOrEqual(2)
          // ALARM, CLEAR, ALARM, CLEAR, ...: never cleared while not raised, never raised twice
          seq.forEach((kind, i) => { expect(kind, `${code} event ${i}`).toBe(i % 2 === 0 ? 'alarm' : 'clear') })
        }
        const unknown = long.events.filter((e) => e.kind !== 'changed' && !codes.includes(e.code))
        expect(unknown).toEqual([])
      })

      it('is documented in docs/device-protocol.md: every field and alarm code', () => {
        const doc = readFileSync(join(import.meta.dirname, '..', '..', '..', 'docs', 'device-protocol.md'), 'utf8')
        const section = doc.slice(doc.indexOf(`**${model.name}** (\`${model.prefix}-\`, fw \`${model.fw}\`)`))
        expect(section.length).toBeLessThan(doc.length)
        const next = section.indexOf('\n**', 1)
        const own = next > 0 ? section.slice(0, next) : section
        for (const f of model.fields) expect(own).toContain(`| \`${f.name}\` |`)
        for (const a of model.alarms) expect(own).toContain(`| \`${a.name}\` |`)
      })

      it('reports discrete changes as they happen', () => {
        expect(long.events.filter((e) => e.kind === 'changed').length).toBeGreaterThan(20)
      })
    })
  }

  it('thermostat: temperature stays near the setpoint unless the relay sticks, heater with hysteresis', () => {
    const { states } = trace(MODELS.thermostat!, 5, 6 * HOUR)
    const normal = states.filter((s) => s.relay === 'ok')
    // mostly within a degree of the setpoint (not while it cools down after a stuck relay, ~7 min)
    const near = normal.filter((s) => Math.abs(Number(s.temp) - Number(s.setpoint)) < 1)
    expect(near.length).toBeGreaterThan(normal.length * 0.6)
    for (const s of normal) {
      if (Number(s.temp) < Number(s.setpoint) - 0.5) expect(s.heater).toBe('on')
      if (Number(s.temp) > Number(s.setpoint) + 0.5) expect(s.heater).toBe('off')
    }
    expect(states.some((s) => s.relay === 'stuck' && Number(s.temp) > 28)).toBe(true)
  })

  it('door: locked whenever idle, open only while unlocked or forced', () => {
    const { states, events } = trace(MODELS.door!, 3, 6 * HOUR)
    expect(new Set(states.map((s) => `${s.door}/${s.lock}`))).toEqual(new Set(['closed/locked', 'closed/unlocked', 'open/unlocked', 'open/locked']))
    const forcedOpen = states.filter((s) => s.door === 'open' && s.lock === 'locked').length
    expect(forcedOpen).toBeLessThan(states.length / 50)
    expect(events.some((e) => e.kind === 'alarm' && e.code === 'forced')).toBe(true)
  })

  it('pump: runs on level, stops on E17 and E21, pressure and flow follow', () => {
    const { states } = trace(MODELS.pump!, 9, 6 * HOUR)
    for (const s of states) {
      const level = Number(s.level)
      expect(level).toBeGreaterThanOrEqual(0)
      expect(level).toBeLessThanOrEqual(100)
      if (s.fault !== 'none') expect(['E17', 'E21']).toContain(s.fault)
    }
    const running = states.filter((s) => s.run === 'on' && s.fault === 'none' && Number(s.flow) > 50)
    expect(running.length).toBeGreaterThan(100)
    for (const s of running) expect(Number(s.pressure)).toBeGreaterThan(3)
    const idle = (s: Record<string, string> | undefined): boolean => s !== undefined && s.run === 'off' && s.fault === 'none'
    const stopped = states.filter((s, i) => idle(s) && idle(states[i - 1]) && idle(states[i - 2]))
    expect(stopped.length).toBeGreaterThan(100)
    for (const s of stopped) expect(Number(s.flow)).toBeLessThan(6)
  })
})

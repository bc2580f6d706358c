import { describe, expect, it } from 'vitest'
import type { DataFrame } from '@herald/device-protocol'
import { mapFrame, parseValueSource } from './mapping.js'
import type { MappingRule } from './mapping.js'

const device = { name: 'line-1', serial: 'TH-000001', model: 'thermostat', fw: '1.4.2' }

function frame (type: DataFrame['type'], fields: Record<string, string>, code: string | null = null): DataFrame {
  return { type, boot: 2, seq: 9, code, fields }
}

const src = (text: string): ReturnType<typeof parseValueSource> => parseValueSource(text)

const rules: MappingRule[] = [
  { on: 'STATE', model: 'thermostat', code: null, where: new Map(), action: { kind: 'raise', event: 'temperature', payload: [['device', src('$serial')], ['celsius', src('temp:number')], ['heater', src('heater:bool')]] } },
  { on: 'STATE', model: null, code: null, where: new Map(), action: { kind: 'raise', event: 'readings', payload: [['at', src('$boot')], ['n', src('$seq')], ['all', src('$fields')]] } },
  { on: 'ALARM', model: null, code: 'overheat', where: new Map(), action: { kind: 'raise', event: 'overheat', payload: [['code', src('$code')], ['line', src('$device')]] } },
  { on: 'CLEAR', model: null, code: 'overheat', where: new Map(), action: { kind: 'raiseNull', event: 'overheat' } },
  { on: 'STATE', model: 'door', code: null, where: new Map([['lock', 'locked']]), action: { kind: 'raise', event: 'door-state', payload: [['lock', src('lock')]] } }
]

describe('[GW-KEY-1] keyed events', () => {
  const keyedRules: MappingRule[] = [
    { on: 'STATE', model: null, code: null, where: new Map(), action: { kind: 'raise', event: 'thermo', payload: [['device', src('$serial')], ['c', src('temp:number')]] }, keyed: { spec: { kind: 'field', field: 'device' }, source: null } },
    { on: 'STATE', model: null, code: null, where: new Map(), action: { kind: 'raise', event: 'valve', payload: [['open', src('open:bool')]] }, keyed: { spec: { kind: 'raise' }, source: src('$device') } },
    { on: 'CLEAR', model: null, code: null, where: new Map(), action: { kind: 'raiseNull', event: 'thermo' }, keyed: { spec: { kind: 'field', field: 'device' }, source: src('$serial') } },
    { on: 'ALARM', model: null, code: null, where: new Map(), action: { kind: 'raise', event: 'thermo', payload: [['device', src('n:number')]] }, keyed: { spec: { kind: 'field', field: 'device' }, source: null } }
  ]

  it('gives each raise its key: from the payload field, from the rule\'s source, for a null instance too', () => {
    expect(mapFrame(keyedRules, device, frame('STATE', { temp: '21', open: 'on' })).raises).toEqual([
      { name: 'thermo', payload: { device: 'TH-000001', c: 21 }, key: 'TH-000001' },
      { name: 'valve', payload: { open: true }, key: 'line-1' }
    ])
    expect(mapFrame(keyedRules, device, frame('CLEAR', {})).raises).toEqual([{ name: 'thermo', isNull: true, key: 'TH-000001' }])
  })

  it('a key that cannot be made is a problem of the rule, never a raise without a key', () => {
    const r = mapFrame(keyedRules, device, frame('ALARM', { n: '2.5' }))
    expect(r.raises).toEqual([])
    expect(r.problems).toEqual(['mapping[3] (thermo): the payload has no string or whole-number field "device" (the event\'s key)'])
    expect(mapFrame(keyedRules, device, frame('ALARM', { n: '7' })).raises).toEqual([{ name: 'thermo', payload: { device: 7 }, key: '7' }])
  })
})

describe('mapFrame', () => {
  it('raises every matching rule in order, with typed payload values and metadata', () => {
    const r = mapFrame(rules, device, frame('STATE', { temp: '21.37', heater: 'on', prev: 'none' }))
    expect(r.problems).toEqual([])
    expect(r.raises).toEqual([
      { name: 'temperature', payload: { device: 'TH-000001', celsius: 21.37, heater: true } },
      { name: 'readings', payload: { at: 2, n: 9, all: { temp: '21.37', heater: 'on' } } }
    ])
  })

  it('matches alarm codes, raises null on CLEAR, and filters by model and field values', () => {
    expect(mapFrame(rules, device, frame('ALARM', {}, 'overheat')).raises).toEqual([{ name: 'overheat', payload: { code: 'overheat', line: 'line-1' } }])
    expect(mapFrame(rules, device, frame('ALARM', {}, 'tamper')).raises).toEqual([])
    expect(mapFrame(rules, device, frame('CLEAR', {}, 'overheat')).raises).toEqual([{ name: 'overheat', isNull: true }])
    const door = { ...device, model: 'door', serial: 'DR-1' }
    expect(mapFrame(rules, door, frame('STATE', { lock: 'open' })).raises.map((x) => x.name)).toEqual(['readings'])
    expect(mapFrame(rules, door, frame('STATE', { lock: 'locked' })).raises.map((x) => x.name)).toEqual(['readings', 'door-state'])
  })

  it('reports a rule whose field is missing or malformed, and still raises the others', () => {
    const r = mapFrame(rules, device, frame('STATE', { temp: 'hot', heater: 'maybe' }))
    expect(r.raises.map((x) => x.name)).toEqual(['readings'])
    expect(r.problems).toEqual(['mapping[0] (temperature): field "temp" = "hot" is not a number'])
    const missing = mapFrame(rules, device, frame('STATE', { heater: 'off' }))
    expect(missing.problems).toEqual(['mapping[0] (temperature): field "temp" is missing'])
  })

  it('maps the same frame to the same events every time (a resent report raises what it raised first)', () => {
    const f = frame('STATE', { temp: '20', heater: 'off' })
    expect(mapFrame(rules, device, f)).toEqual(mapFrame(rules, device, f))
  })
})

describe('parseValueSource', () => {
  it('parses metadata, fields and types, and names what is wrong', () => {
    expect(parseValueSource('$serial')).toEqual({ kind: 'meta', name: 'serial' })
    expect(parseValueSource('temp:number')).toEqual({ kind: 'field', name: 'temp', type: 'number' })
    expect(parseValueSource('label')).toEqual({ kind: 'field', name: 'label', type: 'string' })
    expect(() => parseValueSource('$nope')).toThrow(/unknown metadata/)
    expect(() => parseValueSource('temp:float')).toThrow(/unknown type "float"/)
    expect(() => parseValueSource('Temp')).toThrow(/lowercase/)
  })
})

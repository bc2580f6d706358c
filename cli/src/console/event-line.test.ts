import { describe, it, expect } from 'vitest'
import { eventRecord, payloadKind, renderEventJson, renderEventLine, renderPayload, type ConsoleEvent } from './event-line.js'
import { stripStyle } from './style.js'

const AT = new Date(2024, 5, 1, 14, 3, 21, 123).getTime()

function ev (over: Partial<ConsoleEvent> = {}): ConsoleEvent {
  return {
    id: '7f3c-12',
    serviceId: 'boiler-1',
    name: 'alarms',
    category: 'queueing',
    position: 1234,
    raisedAt: 1_700_000_000_000,
    receivedAt: 1_700_000_000_040,
    age: 120,
    redelivered: false,
    isNull: false,
    recipient: null,
    payload: { code: 'E42', text: 'pressure low' },
    ...over
  }
}

describe('renderEventLine', () => {
  it('prints time shown, service, event, position, age and compact JSON', () => {
    expect(renderEventLine(ev(), { arrivedAt: AT })).toBe('14:03:21.123 boiler-1 alarms #1234 120ms {"code":"E42","text":"pressure low"}')
  })

  it('marks redelivered events, private events with their recipient, and null instances', () => {
    expect(renderEventLine(ev({ redelivered: true, age: 3200 }), { arrivedAt: AT })).toBe('14:03:21.123 boiler-1 alarms #1234 3.2s [redelivered] {"code":"E42","text":"pressure low"}')
    expect(renderEventLine(ev({ category: 'private', recipient: 'alice/app', payload: 'hi' }), { arrivedAt: AT })).toBe('14:03:21.123 boiler-1 alarms #1234 120ms [to alice/app] "hi"')
    expect(renderEventLine(ev({ name: 'temperature', category: 'replacing', isNull: true, payload: null, age: 7_200_000 }), { arrivedAt: AT })).toBe('14:03:21.123 boiler-1 temperature #1234 2h [null]')
  })

  it('[CLI-KEY-3] shows the replacing key of a keyed event, quoted, in the line and in the JSON record', () => {
    const keyed = ev({ name: 'thermostat', category: 'replacing', key: 'room 1', payload: { c: 21 } })
    expect(renderEventLine(keyed, { arrivedAt: AT })).toBe('14:03:21.123 boiler-1 thermostat #1234 120ms [key "room 1"] {"c":21}')
    expect(eventRecord(keyed, AT).key).toBe('room 1')
    expect('key' in eventRecord(ev(), AT)).toBe(false)
  })

  it('tells a null instance from a JSON null payload', () => {
    expect(renderPayload({ isNull: true, payload: null })).toBe('[null]')
    expect(renderPayload({ isNull: false, payload: null })).toBe('null')
  })

  it('colors only when asked, with the same visible text', () => {
    const plain = renderEventLine(ev({ redelivered: true }), { arrivedAt: AT })
    const colored = renderEventLine(ev({ redelivered: true }), { arrivedAt: AT, color: true })
    expect(plain).not.toContain('\x1b')
    expect(colored).toContain('\x1b[')
    expect(stripStyle(colored)).toBe(plain)
  })
})

describe('renderPayload', () => {
  it('prints JSON text, numbers and arrays as compact JSON', () => {
    expect(renderPayload({ isNull: false, payload: 'plain text' })).toBe('"plain text"')
    expect(renderPayload({ isNull: false, payload: 21.5 })).toBe('21.5')
    expect(renderPayload({ isNull: false, payload: [1, { a: true }] })).toBe('[1,{"a":true}]')
  })

  it('prints bytes as their length and leading bytes in hex', () => {
    expect(renderPayload({ isNull: false, payload: Uint8Array.of(0x0a, 0xff, 0x00) })).toBe('bytes(3) 0aff00')
    expect(renderPayload({ isNull: false, payload: new Uint8Array(0) })).toBe('bytes(0)')
    const big = Buffer.alloc(100, 0xab)
    expect(renderPayload({ isNull: false, payload: big })).toBe(`bytes(100) ${'ab'.repeat(32)}…`)
    expect(renderPayload({ isNull: false, payload: big }, { maxHexBytes: 2 })).toBe('bytes(100) abab…')
  })

  it('shows bytes of a view into a larger buffer, not the buffer around it', () => {
    const whole = Buffer.from('xxhelloxx')
    expect(renderPayload({ isNull: false, payload: whole.subarray(2, 7) })).toBe('bytes(5) 68656c6c6f')
  })

  it('cuts long JSON and says how large it was', () => {
    const payload = { text: 'a'.repeat(2000) }
    const text = renderPayload({ isNull: false, payload }, { maxPayloadChars: 20 })
    expect(text).toBe(`{"text":"aaaaaaaaaaa… (${JSON.stringify(payload).length} B)`)
  })

  it('never cuts a character in half', () => {
    const text = renderPayload({ isNull: false, payload: '😀😀😀' }, { maxPayloadChars: 4 })
    expect(text).toBe('"😀… (14 B)')
  })

  it('escapes characters that could drive the terminal or reorder the line', () => {
    const text = renderPayload({ isNull: false, payload: { t: 'a\u009b31mb\u202ec\nd\x1b[2J' } })
    expect(text).toBe('{"t":"a\\u009b31mb\\u202ec\\nd\\u001b[2J"}')
    expect(JSON.parse(text)).toEqual({ t: 'a\u009b31mb\u202ec\nd\x1b[2J' })
  })
})

describe('eventRecord and renderEventJson', () => {
  it('carry every field, with the payload as JSON, base64 bytes or null', () => {
    expect(eventRecord(ev(), AT)).toEqual({
      id: '7f3c-12',
      serviceId: 'boiler-1',
      event: 'alarms',
      category: 'queueing',
      position: 1234,
      raisedAt: 1_700_000_000_000,
      receivedAt: 1_700_000_000_040,
      arrivedAt: AT,
      age: 120,
      redelivered: false,
      isNull: false,
      recipient: null,
      payloadKind: 'json',
      payload: { code: 'E42', text: 'pressure low' }
    })
    const bytes = JSON.parse(renderEventJson(ev({ payload: Buffer.from('hello') }), AT)) as Record<string, unknown>
    expect(bytes).toMatchObject({ payloadKind: 'bytes', payload: 'aGVsbG8=' })
    const nul = JSON.parse(renderEventJson(ev({ isNull: true, payload: null, category: 'replacing' }), AT)) as Record<string, unknown>
    expect(nul).toMatchObject({ payloadKind: 'none', payload: null, isNull: true })
  })

  it('is one line that parses back to the same payload, whatever it holds', () => {
    const payload = { t: 'line\nbreak\u2028sep\u009b' }
    const line = renderEventJson(ev({ payload }), AT)
    expect(line).not.toMatch(/[\n\u2028\u009b]/)
    expect((JSON.parse(line) as { payload: unknown }).payload).toEqual(payload)
  })

  it('payloadKind', () => {
    expect(payloadKind({ isNull: false, payload: 'x' })).toBe('json')
    expect(payloadKind({ isNull: false, payload: new Uint8Array(1) })).toBe('bytes')
    expect(payloadKind({ isNull: true, payload: null })).toBe('none')
  })
})

/** The view's topic rules and envelope ([PLAIN-VIEW-1..3]); delivery is proven end to end in test/plain-view.test.ts. */
import { describe, expect, it } from 'vitest'
import { PayloadKind, utf8Encode, type StoredEvent } from '@herald/protocol'
import { filterCanMatchView, filterMatches, viewEnvelope, viewTopic } from './plain-view.js'

function stored (over: Partial<StoredEvent> = {}): StoredEvent {
  return {
    seq: 3, name: 'temperature', category: 'replacing', raisedAt: 1000, isNull: false, recipient: null,
    payloadKind: PayloadKind.json, payload: utf8Encode('{"c":21.5}'),
    position: 7, serviceId: 'boiler-1', instance: 'inst', receivedAt: 1200, uploadAge: 5, expiresAt: null,
    ...over
  }
}

const levels = (t: string): string[] => t.split('/')

describe('the view topic tree', () => {
  it('a stored event on herald/v1/events/<event>/<service>, a private one under its recipient', () => {
    expect(viewTopic(stored())).toBe('herald/v1/events/temperature/boiler-1')
    expect(viewTopic(stored({ name: 'notices', category: 'private', recipient: 'alice/phone' }))).toBe('herald/v1/events/notices/boiler-1/alice/phone')
  })

  it('MQTT wildcards match as MQTT says: # the parent level too, + one level', () => {
    const t = levels('herald/v1/events/temperature/boiler-1')
    for (const f of ['#', 'herald/#', 'herald/v1/events/#', 'herald/v1/events/+/+', 'herald/v1/events/temperature/#', 'herald/v1/events/+/boiler-1', '+/+/+/+/+']) {
      expect(filterMatches(levels(f), t), f).toBe(true)
    }
    for (const f of ['herald/v1/events/+', 'herald/v1/events/+/+/+', 'herald/v1/events/heater/+', 'herald/v1/events/temperature/boiler-2', '+/+/+/+']) {
      expect(filterMatches(levels(f), t), f).toBe(false)
    }
    expect(filterMatches(levels('herald/v1/events/notices/#'), levels('herald/v1/events/notices'))).toBe(true)
  })

  it('a filter is granted if it can match some view topic, refused if it never can', () => {
    for (const f of ['#', 'herald/#', 'herald/v1/events/#', 'herald/v1/events/+/+', 'herald/v1/events/nothing-yet/+', 'herald/v1/events/notices/+/alice/+', '+/v1/#', 'herald/+/events/temperature/boiler-1']) {
      expect(filterCanMatchView(levels(f)), f).toBe(true)
    }
    for (const f of ['$SYS/#', 'herald/v1/raise/#', 'herald/s/boiler-1/ack', 'herald/v1/events/+', 'herald/v1/events/+/+/+', 'herald/v1/events/a/b/c/d/e', 'herald/v1/events//b', 'other']) {
      expect(filterCanMatchView(levels(f)), f).toBe(false)
    }
  })
})

describe('the envelope', () => {
  it('JSON payloads as JSON, with every documented field', () => {
    expect(JSON.parse(viewEnvelope(stored()).toString('utf8'))).toEqual({
      id: 'inst-3', service: 'boiler-1', event: 'temperature', category: 'replacing', position: 7,
      raisedAt: 1000, receivedAt: 1200, isNull: false, payloadEncoding: 'json', payload: { c: 21.5 }
    })
  })

  it('a JSON null payload is a value; a null instance says isNull and payloadEncoding none', () => {
    const value = JSON.parse(viewEnvelope(stored({ payload: utf8Encode('null') })).toString('utf8')) as Record<string, unknown>
    expect(value).toMatchObject({ isNull: false, payloadEncoding: 'json', payload: null })
    const cleared = JSON.parse(viewEnvelope(stored({ isNull: true, payloadKind: PayloadKind.none, payload: new Uint8Array(0) })).toString('utf8')) as Record<string, unknown>
    expect(cleared).toMatchObject({ isNull: true, payloadEncoding: 'none', payload: null })
  })

  it('bytes payloads in base64, private events with their recipient, names escaped', () => {
    const bytes = new Uint8Array([0, 1, 2, 250, 255])
    const e = JSON.parse(viewEnvelope(stored({ name: 'notices', category: 'private', recipient: 'alice/phone', payloadKind: PayloadKind.bytes, payload: bytes })).toString('utf8')) as Record<string, unknown>
    expect(e).toMatchObject({ recipient: 'alice/phone', payloadEncoding: 'base64', payload: Buffer.from(bytes).toString('base64') })
    expect(Buffer.from(e.payload as string, 'base64')).toEqual(Buffer.from(bytes))
  })
})

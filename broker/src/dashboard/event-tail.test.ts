import { describe, expect, it } from 'vitest'
import { ConfigError, PayloadKind, utf8Encode, type StoredEvent } from '@herald/protocol'
import { EventTail } from './event-tail.js'

function stored (position: number, over: Partial<StoredEvent> = {}): StoredEvent {
  return {
    seq: position, name: 'readings', category: 'queueing', raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.json,
    payload: utf8Encode(JSON.stringify(position)), position, serviceId: 'svc', instance: 'i', receivedAt: 1000 + position, uploadAge: 0, expiresAt: null, ...over
  }
}

describe('event tail [OPS-DASH-5]', () => {
  it('keeps the last `size` events, newest first, and filters by event and service', () => {
    const tail = new EventTail({ size: 4, previewBytes: 16 })
    tail.push([stored(1), stored(2, { name: 'other' }), stored(3, { serviceId: 'svc-2' })])
    tail.push([stored(4), stored(5), stored(6, { name: 'other', serviceId: 'svc-2' })])
    expect(tail.read().map((e) => e.position)).toEqual([6, 5, 4, 3])
    expect(tail.read({ event: 'readings' }).map((e) => e.position)).toEqual([5, 4, 3])
    expect(tail.read({ service: 'svc-2' }).map((e) => e.position)).toEqual([6, 3])
    expect(tail.read({ event: 'other', service: 'svc-2' }).map((e) => e.position)).toEqual([6])
    expect(tail.read({ event: '' }, 2).map((e) => e.position)).toEqual([6, 5])
    expect(tail.read()[0]).toEqual({ position: 6, event: 'other', service: 'svc-2', receivedAt: 1006, bytes: 1, isNull: false, preview: '6', truncated: false })
  })

  it('keeps a copy of at most previewBytes of each payload (hex for bytes), never the payload itself', () => {
    const tail = new EventTail({ size: 2, previewBytes: 4 })
    const payload = utf8Encode('"abcdefgh"')
    tail.push([stored(1, { payload }), stored(2, { payloadKind: PayloadKind.bytes, payload: new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x01]) })])
    payload.fill(0x20)
    const [bin, text] = tail.read()
    expect(text).toMatchObject({ preview: '"abc', bytes: 10, truncated: true })
    expect(bin).toMatchObject({ preview: 'deadbeef', bytes: 5, truncated: true })
  })

  it('checks its bounds', () => {
    expect(() => new EventTail({ size: 0 })).toThrow(ConfigError)
    expect(() => new EventTail({ previewBytes: 1_000_000 })).toThrow(/previewBytes/)
  })
})

/**
 * The view's topic rules and envelope ([PLAIN-VIEW-1..4]), and PlainView on a memory store with
 * stand-in connections: recheck() after a site change [PLAIN-VIEW-5], unsubscribe, and a retained
 * value never older than a live one. Delivery over real sockets: test/plain-view.test.ts.
 */
import { EventEmitter } from 'node:events'
import { PassThrough } from 'node:stream'
import type { Client } from 'aedes'
import mqttPacket, { type IPublishPacket } from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { PayloadKind, utf8Encode, type Site, type StoredEvent } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import type { PlainPrincipal } from '../auth/principal.js'
import { MemoryEventStore } from '../event-store/memory-event-store.js'
import { PlainView, filterCanMatchView, filterMatches, viewEnvelope, viewTopic } from './plain-view.js'

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

const SITE_DOC = (roles: string[]) => ({
  guests: true,
  events: [
    { name: 'tamper', category: 'replacing', access: { roles: ['operator'] } },
    { name: 'temperature', category: 'replacing', access: 'everyone' },
    { name: 'alarms', category: 'queueing', lifetime: '1d', access: { roles: ['operator'] } }
  ],
  services: [{ id: 'svc-a', secret: 'svc-a-secret', events: ['tamper', 'temperature', 'alarms'] }],
  users: [{ name: 'bob', password: 'bob-password', roles }]
})

/** A stand-in for an aedes client: its stream, and its parser (where the view reads PUBACKs). */
function fakeClient (id: string, options: { reading?: boolean } = {}): { client: Client, received: IPublishPacket[], read: () => void } {
  const conn = new PassThrough()
  const received: IPublishPacket[] = []
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  parser.on('packet', (p) => { if (p.cmd === 'publish') received.push(p) })
  const read = (): void => { conn.on('data', (d: Buffer) => { parser.parse(d) }) }
  if (options.reading !== false) read()
  return { client: { id, conn, _parser: new EventEmitter() } as unknown as Client, received, read }
}

async function setup (roles: string[], maxQueuedBytes = 1 << 20): Promise<{ view: PlainView, store: MemoryEventStore, setSite: (s: Site) => void, raise: (name: string, payload: unknown, isNull?: boolean, serviceId?: string) => Promise<StoredEvent[]> }> {
  let site = await parseSite(SITE_DOC(roles))
  const store = new MemoryEventStore({ limitsOf: (n) => site.events.get(n) })
  const view = new PlainView({ site: () => site, store, limits: { maxSubscriptions: 10, maxQueuedBytes, slowTimeoutMs: 60_000, hardLimitBytes: 1 << 24, maxInflight: 100, maxConcurrentReads: 2 } })
  let seq = 0
  const raise = async (name: string, payload: unknown, isNull = false, serviceId = 'svc-a'): Promise<StoredEvent[]> => {
    const def = site.events.get(name)!
    const r = await store.append({
      serviceId, instance: 'i', handledUpTo: ++seq, receivedAt: Date.now(),
      events: [{ seq, name, category: def.category, raisedAt: Date.now(), isNull, recipient: null, payloadKind: isNull ? PayloadKind.none : PayloadKind.json, payload: utf8Encode(isNull ? '' : JSON.stringify(payload)) }]
    })
    return [...r.stored]
  }
  return { view, store, setSite: (s) => { site = s }, raise }
}

async function subscribe (view: PlainView, client: Client, principal: PlainPrincipal, topic: string, qos: 0 | 1 = 0): Promise<void> {
  const granted = await new Promise<unknown>((resolve) => { view.authorizeSubscribe(client, principal, { topic, qos }, (_err, sub) => { resolve(sub) }) })
  expect(granted).not.toBeNull()
  view.subscribed(client, [{ topic, qos }])
}

const payloads = (r: IPublishPacket[]): unknown[] => r.map((p) => (JSON.parse(p.payload.toString()) as { payload: unknown }).payload)

describe('PlainView', () => {
  it('recheck(): a role withdrawn stops delivery at once; a role granted sends the last values now readable', async () => {
    const { view, setSite, raise } = await setup(['viewer'])
    const bob = (await parseSite(SITE_DOC(['viewer']))).users.get('bob')!
    await raise('tamper', 'open')
    const { client, received } = fakeClient('bob-1')
    await subscribe(view, client, { kind: 'plain', clientId: 'bob-1', user: bob, service: null }, '#')
    view.onStored(await raise('alarms', 1))
    view.onStored(await raise('temperature', 't1'))
    await waitFor(() => received.length === 1, 'temperature')
    expect(payloads(received)).toEqual(['t1'])

    // bob becomes an operator: the tamper value he may read now comes, retained; alarms live
    setSite(await parseSite(SITE_DOC(['viewer', 'operator'])))
    view.recheck()
    await waitFor(() => received.length === 2, 'the tamper value, on recheck')
    expect(received[1]).toMatchObject({ topic: 'herald/v1/events/tamper/svc-a', retain: true })
    view.onStored(await raise('alarms', 2))
    await waitFor(() => received.length === 3, 'alarms, live')
    expect(payloads(received).slice(1)).toEqual(['open', 2])

    // and back: nothing role-guarded from now on
    setSite(await parseSite(SITE_DOC(['viewer'])))
    view.recheck()
    view.onStored(await raise('alarms', 3))
    view.onStored(await raise('tamper', 'closed'))
    view.onStored(await raise('temperature', 't2'))
    await waitFor(() => received.length === 4, 'temperature')
    expect(payloads(received).slice(3)).toEqual(['t2'])

    // a user removed from the site reads nothing
    setSite(await parseSite({ ...SITE_DOC([]), users: [] }))
    view.recheck()
    view.onStored(await raise('temperature', 't3'))
    expect(view.stats.sent).toBe(4)
  })

  it('unsubscribe stops delivery; a closed connection is forgotten; onStored with no subscriber sends nothing', async () => {
    const { view, raise } = await setup([])
    const { client, received } = fakeClient('g-1')
    const guest: PlainPrincipal = { kind: 'plain', clientId: 'g-1', user: null, service: null }
    await subscribe(view, client, guest, 'herald/v1/events/temperature/+')
    view.onStored(await raise('temperature', 1))
    await waitFor(() => received.length === 1, 'one event')
    view.unsubscribed(client, ['herald/v1/events/temperature/+'])
    expect(view.stats.subscriptions).toBe(0)
    view.onStored(await raise('temperature', 2))
    await subscribe(view, client, guest, '#')
    await waitFor(() => received.length === 2, 'the retained value on the new subscription')
    expect(received[1]).toMatchObject({ retain: true })
    view.closed(client)
    expect(view.stats).toMatchObject({ subscribers: 0, subscriptions: 0 })
    view.onStored(await raise('temperature', 3))
    expect(payloads(received)).toEqual([1, 2])
  })

  it('a retained value read before a newer one went out live is not sent after it', async () => {
    const { view, store, raise } = await setup([])
    await raise('temperature', 'old')
    // the store read of the burst resolves only after the newer instance was stored and sent live
    let release: () => void = () => {}
    let readDone: () => void = () => {}
    const gate = new Promise<void>((resolve) => { release = resolve })
    const done = new Promise<void>((resolve) => { readDone = resolve })
    const read = store.read.bind(store)
    let reads = 0
    store.read = async (q) => {
      const r = await read(q)
      reads++
      readDone()
      await gate
      return r
    }
    const { client, received } = fakeClient('g-2')
    await subscribe(view, client, { kind: 'plain', clientId: 'g-2', user: null, service: null }, '#')
    await done
    view.onStored(await raise('temperature', 'new'))
    release()
    await waitFor(() => received.length >= 1, 'the live value')
    // the burst reads on until a page comes back empty: the old instance, the new one, nothing
    await waitFor(() => reads >= 3, 'the burst done')
    await new Promise((resolve) => setImmediate(resolve))
    expect(payloads(received)).toEqual(['new'])
  })

  it("the retained values of '#' over many services are read a page at a time, only as fast as the connection takes them", async () => {
    const { view, store, raise } = await setup([], 16 * 1024)
    const services = 2000
    for (let i = 0; i < services; i++) await raise('temperature', { i, text: 'x'.repeat(100) }, false, `svc-${i}`)
    let reads = 0
    const read = store.read.bind(store)
    store.read = async (q) => {
      reads++
      return await read(q)
    }
    const { client, received, read: startReading } = fakeClient('g-3', { reading: false })
    await subscribe(view, client, { kind: 'plain', clientId: 'g-3', user: null, service: null }, '#')
    // it never reads: one page goes out, then the burst waits for the socket to drain
    await waitFor(() => reads >= 1 && view.stats.sent > 0, 'the first page')
    expect((client.conn as unknown as PassThrough).writableNeedDrain).toBe(true)
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
    expect(reads).toBe(1)
    expect(view.stats.sent).toBeLessThanOrEqual(200)
    // it reads: every last value comes, retained, once
    startReading()
    await waitFor(() => received.length === services, 'every retained value', 20_000)
    expect(received.every((p) => p.retain)).toBe(true)
    expect(new Set(received.map((p) => p.topic)).size).toBe(services)
    expect(reads).toBeGreaterThanOrEqual(services / 200)
  })

  it('retained reads across connections: at most maxConcurrentReads at once', async () => {
    const { view, store, raise } = await setup([])
    for (let i = 0; i < 50; i++) await raise('temperature', i, false, `svc-${i}`)
    let running = 0
    let most = 0
    const read = store.read.bind(store)
    store.read = async (q) => {
      most = Math.max(most, ++running)
      try {
        await new Promise((resolve) => setImmediate(resolve))
        return await read({ ...q, limit: 5 })
      } finally {
        running--
      }
    }
    const clients = Array.from({ length: 8 }, (_, i) => fakeClient(`g-c${i}`))
    for (const [i, c] of clients.entries()) await subscribe(view, c.client, { kind: 'plain', clientId: `g-c${i}`, user: null, service: null }, '#')
    await waitFor(() => clients.every((c) => c.received.length === 50), 'every retained value on every connection')
    expect(most).toBe(2)
  })
})

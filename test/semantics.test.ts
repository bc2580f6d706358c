/** Proof 5: lifetime expiry, max-size push-out, replacing and null events, through the client API. */
import { describe, it, expect, afterEach } from 'vitest'
import { eventsOfService, systemClock, type Clock, type StoredEvent } from '@herald/protocol'
import { MemoryEventStore, createBroker, listenTcp, type BrokerServer, type EventStore } from '@herald/broker'
import { waitFor } from '@herald/protocol/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { testSite } from './support/site.js'
import { freePort } from './support/ports.js'
import { SettableClock } from './support/settable-clock.js'

const HOUR = 3_600_000
/** The lifetime the test site gives "short-lived". */
const SHORT_LIFE = 2000

/** A TCP port nothing listens on right now (a broker is started on it later). */
/** The broker's stored, unexpired "short-lived" events (by the broker's clock `now`). */
async function shortLived (broker: BrokerServer, now: number): Promise<StoredEvent[]> {
  return await broker.broker.store.read({ event: 'short-lived', after: 0, services: null, recipient: null, now, limit: 1000 })
}

describe('event categories as a client sees them', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('queueing: events past their lifetime are never delivered, and are purged', async () => {
    h = await Harness.create()
    const clock = new SettableClock(Date.now())
    const broker = await h.broker({ clock })
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 10; i++) await svc.raise('short-lived', { old: i })
    await svc.drained()
    expect(broker.broker.stats().storedEvents).toBe(10)
    clock.advance(2001) // the site gives short-lived a lifetime of 2s
    await svc.raise('short-lived', { fresh: 1 })
    await svc.drained()
    const late = await collect(h.client(broker.url, 'alice', 'late'), 'short-lived')
    await late.until(1)
    expect(late.payloads()).toEqual([{ fresh: 1 }])
    expect(await broker.broker.store.purgeExpired(clock.now())).toBe(10)
    expect(broker.broker.stats().storedEvents).toBe(1)
  })

  it('queueing: a service does not upload events whose lifetime ran out while it was offline', async () => {
    h = await Harness.create()
    const clock = new SettableClock(Date.now())
    const dead = 'mqtt://127.0.0.1:9' // nothing listens there
    const svc = await h.service(dead, 'svc-a', { clock })
    const expired: number[] = []
    svc.on('expired', (info) => { expired.push(...info.events.map((e) => e.seq)) })
    for (let i = 0; i < 5; i++) await svc.raise('short-lived', { i })
    clock.advance(2500)
    const kept = await svc.raise('readings', { kept: true })
    await svc.close()

    const broker = await h.broker()
    const again = await h.service(broker.url, 'svc-a', { clock })
    again.on('expired', (info) => { expired.push(...info.events.map((e) => e.seq)) })
    await again.drained()
    expect(expired).toEqual([1, 2, 3, 4, 5])
    expect(again.counters.expired).toBe(5)
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    await c.until(1)
    expect(c.events.map((e) => e.id)).toEqual([kept.id])
    expect(broker.broker.stats().uplink.stored).toBe(1)
  })

  it('queueing: past max queue size the oldest are pushed out and the newest kept, in order', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 20; i++) await svc.raise('small-queue', { i }) // the site keeps 5
    await svc.drained()
    const late = await collect(h.client(broker.url, 'alice', 'late'), 'small-queue')
    await late.until(5)
    await svc.raise('small-queue', { i: 20 })
    await late.until(6)
    expect(late.payloads()).toEqual([15, 16, 17, 18, 19, 20].map((i) => ({ i })))
  })

  it('replacing: a late client gets only the last instance per service; a null instance says the condition ended', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const a = await h.service(broker.url, 'svc-a')
    const b = await h.service(broker.url, 'svc-b')
    for (let t = 1; t <= 10; t++) await a.raise('temperature', { t })
    for (let t = 1; t <= 3; t++) await b.raise('temperature', { t: 100 + t })
    await Promise.all([a.drained(), b.drained()])
    const late = await collect(h.client(broker.url, null, 'guest-screen'), 'temperature')
    await late.until(2)
    // two services upload independently: their relative order at the broker is not defined
    const byService = [...late.events].sort((x, y) => x.serviceId.localeCompare(y.serviceId)).map((e) => [e.serviceId, e.payload, e.isNull])
    expect(byService).toEqual([['svc-a', { t: 10 }, false], ['svc-b', { t: 103 }, false]])

    await a.raiseNull('temperature')
    await late.until(3)
    expect(late.events[2]).toMatchObject({ serviceId: 'svc-a', isNull: true, payload: null, category: 'replacing' })
    await a.drained()
    const later = await collect(h.client(broker.url, 'bob', 'later'), 'temperature')
    await later.until(2)
    expect(later.events.map((e) => [e.serviceId, e.isNull, e.payload])).toEqual([['svc-b', false, { t: 103 }], ['svc-a', true, null]])
  })

  it('replacing: while offline, a newer instance supersedes the unsent one in the backlog', async () => {
    h = await Harness.create()
    const svc = await h.service('mqtt://127.0.0.1:9', 'svc-a')
    for (let t = 0; t < 100; t++) await svc.raise('temperature', { t })
    expect(svc.status.backlog).toBe(1)
    await svc.close()
    const broker = await h.broker()
    const again = await h.service(broker.url, 'svc-a')
    await again.drained()
    expect(broker.broker.stats().uplink.stored).toBe(1)
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'temperature')
    await c.until(1)
    expect(c.payloads()).toEqual([{ t: 99 }])
  })

  it('start "new" skips what the broker holds; a services filter keeps only those services', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const a = await h.service(broker.url, 'svc-a')
    const b = await h.service(broker.url, 'svc-b')
    for (let i = 0; i < 5; i++) await a.raise('readings', { a: i })
    await a.drained()
    const client = h.client(broker.url, 'alice', 'app')
    const fresh = await collect(client, 'readings', { start: 'new', key: 'fresh' })
    const onlyB = await collect(client, 'readings', { services: ['svc-b'] })
    await b.raise('readings', { b: 0 })
    await a.raise('readings', { a: 5 })
    await b.raise('readings', { b: 1 })
    await fresh.until(3)
    await onlyB.until(2)
    await waitFor(() => broker.broker.stats().delivered >= 5, 'deliveries')
    // order holds per service; between two services it is not defined
    expect(fresh.events.filter((e) => e.serviceId === 'svc-a').map((e) => e.payload)).toEqual([{ a: 5 }])
    expect(fresh.events.filter((e) => e.serviceId === 'svc-b').map((e) => e.payload)).toEqual([{ b: 0 }, { b: 1 }])
    expect(onlyB.payloads()).toEqual([{ b: 0 }, { b: 1 }])
  })
})

describe('lifetime from the raise, at every hop [STORE-EXPIRE-1]', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('an event uploaded after its service was offline for part of its lifetime expires at raise + lifetime, though the gateway clock jumped', async () => {
    h = await Harness.create()
    const port = await freePort()
    const gw = new SettableClock(Date.now())
    const bk = new SettableClock(Date.now() - 5 * HOUR) // the broker's clock has nothing to do with the gateway's
    const svc = await h.service(`mqtt://127.0.0.1:${port}`, 'svc-a', { clock: gw })
    const old = await svc.raise('short-lived', { old: true })
    gw.advance(1500) // 1.5 s of its 2 s pass offline
    gw.set(gw.now() + 3 * HOUR) // and someone sets the gateway's clock forward
    const broker = await h.broker({ port, clock: bk })
    await svc.drained()
    const received = bk.now()
    expect((await shortLived(broker, received)).map((e) => [e.seq, e.receivedAt, e.expiresAt])).toEqual([[old.seq, received, received - 1500 + SHORT_LIFE]])
    const early = await collect(h.client(broker.url, 'alice', 'early'), 'short-lived')
    await early.until(1)
    expect(early.events.map((e) => e.id)).toEqual([old.id])
    // [EVT-AGE-1] a client sees the age since the raise: 1.5 s offline, and then some
    expect(early.events[0]!.age).toBeGreaterThanOrEqual(1500)

    bk.advance(SHORT_LIFE - 1500) // raise + lifetime, by the broker's clock
    const fresh = await svc.raise('short-lived', { fresh: true })
    await svc.drained()
    const late = await collect(h.client(broker.url, 'alice', 'late'), 'short-lived')
    await late.until(1)
    await waitFor(() => broker.broker.stats().delivered >= 3, 'the fresh event delivered to both clients')
    expect(late.events.map((e) => e.id)).toEqual([fresh.id])
    expect(await broker.broker.store.purgeExpired(bk.now())).toBe(1)
    expect(broker.broker.stats().dropped['short-lived']).toMatchObject({ expired: 1, expiredOnArrival: 0 })
  })

  it('an event read back from the gateway file after a restart counts its age on the gateway wall clock', async () => {
    h = await Harness.create()
    const gw = new SettableClock(Date.now())
    const offline = await h.service('mqtt://127.0.0.1:9', 'svc-a', { clock: gw })
    const a = await offline.raise('short-lived', { n: 1 })
    await offline.close()
    gw.advance(1200) // down for 1.2 s
    const bk = new SettableClock(Date.now() + 7 * HOUR)
    const broker = await h.broker({ clock: bk })
    const again = await h.service(broker.url, 'svc-a', { clock: gw })
    await again.drained()
    expect((await shortLived(broker, bk.now())).map((e) => [e.seq, e.expiresAt])).toEqual([[a.seq, bk.now() - 1200 + SHORT_LIFE]])
  })

  it('events whose lifetime ran out on the way are acknowledged and counted, never stored nor delivered', async () => {
    h = await Harness.create()
    const site = await testSite()
    // a gateway that does not know the lifetime, so it cannot drop them itself [SVC-EXPIRE-1]
    const events = eventsOfService(site, 'svc-a').map((e) => (e.name === 'short-lived' ? { ...e, lifetimeMs: null } : e))
    const gw = new SettableClock(Date.now())
    const offline = await h.service('mqtt://127.0.0.1:9', 'svc-a', { clock: gw, events })
    for (let i = 0; i < 3; i++) await offline.raise('short-lived', { stale: i })
    const kept = await offline.raise('readings', { kept: true })
    await offline.close()
    gw.advance(SHORT_LIFE + 500)
    const broker = await h.broker()
    const again = await h.service(broker.url, 'svc-a', { clock: gw, events })
    const rejected: unknown[] = []
    again.on('rejected', (r) => { rejected.push(r) })
    await again.drained()
    expect(rejected).toEqual([])
    expect(again.counters.expired).toBe(0)
    const stats = broker.broker.stats()
    expect(stats.uplink).toMatchObject({ stored: 1, expiredOnArrival: 3 })
    expect(stats.dropped['short-lived']).toMatchObject({ expiredOnArrival: 3 })
    const fresh = await again.raise('short-lived', { fresh: true })
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'short-lived')
    await c.until(1)
    expect(c.events.map((e) => e.id)).toEqual([fresh.id])
    const r = await collect(h.client(broker.url, 'alice', 'app2'), 'readings')
    await r.until(1)
    expect(r.events.map((e) => e.id)).toEqual([kept.id])
  })

  it('a gateway wall clock hours off does not move the expiry: it counts from the raise on the broker clock', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    for (const skew of [6 * HOUR, -6 * HOUR]) {
      const skewed: Clock = { ...systemClock, now: () => Date.now() + skew }
      const svc = await h.service(broker.url, 'svc-a', { clock: skewed, memoryOnly: true })
      const before = Date.now()
      const r = await svc.raise('short-lived', { skew })
      await svc.drained()
      const after = Date.now()
      const [e] = (await shortLived(broker, after)).filter((x) => x.instance === svc.persistence.instance && x.seq === r.seq)
      expect(e?.raisedAt).toBeGreaterThanOrEqual(before + skew) // the gateway's own time, as raised
      // raised between before and after by the broker's clock (ms rounding aside), so it expires a lifetime later
      expect(e?.expiresAt).toBeGreaterThanOrEqual(before + SHORT_LIFE - 1)
      expect(e?.expiresAt).toBeLessThanOrEqual(after + SHORT_LIFE + 1)
      await svc.close()
    }
  })
})

describe('null over null [STORE-REPLACE-2]', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('a null raised while the stored instance is null is acknowledged and dropped: clients get one null', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    const rejected: unknown[] = []
    svc.on('rejected', (r) => { rejected.push(r) })
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'temperature')
    await svc.raise('temperature', { t: 1 })
    await svc.drained()
    await svc.raiseNull('temperature')
    await svc.drained()
    await svc.raiseNull('temperature') // nothing new: the condition had already ended
    await svc.drained()
    await svc.raise('temperature', { t: 2 })
    await c.until(3)
    await svc.drained() // the last acknowledgement may still be on its way when the client has the event
    expect(broker.broker.stats().uplink.stored).toBe(3)
    expect(c.events.map((e) => [e.isNull, e.payload])).toEqual([[false, { t: 1 }], [true, null], [false, { t: 2 }]])
    expect(rejected).toEqual([])
    expect(svc.status.backlog).toBe(0)
    expect(broker.broker.stats().uplink.nullsDropped).toBe(1)
    expect(broker.broker.stats().dropped.temperature).toMatchObject({ nullsDropped: 1, replaced: 2 })
  })
})

describe('a gateway clock set back [EVT-CLOCK-1]', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('does not hide a broker that stopped acknowledging: the ack timeout runs on the monotonic clock', async () => {
    h = await Harness.create()
    const site = await testSite()
    // a store whose commits never finish: the broker takes the frames and never acknowledges them
    const memory = new MemoryEventStore({ limitsOf: (n) => site.events.get(n) })
    const stalled: EventStore = new Proxy(memory, {
      get (target, prop, receiver) {
        if (prop === 'append') return async () => await new Promise<never>(() => {})
        const v = Reflect.get(target, prop, receiver) as unknown
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
      }
    })
    const broker = await createBroker({ site, store: stalled })
    const listener = await listenTcp(broker, { port: 0 })
    h.onClose(async () => { await listener.close(); await broker.close() })
    const gw = new SettableClock(Date.now())
    const svc = await h.service(`mqtt://127.0.0.1:${listener.address.port}`, 'svc-a', { clock: gw, ackTimeoutMs: 5000, memoryOnly: true })
    await waitFor(() => svc.status.state === 'online', 'online')
    void svc.raise('readings', { n: 1 })
    await waitFor(() => broker.stats().uplink.frames >= 1, 'the frame at the broker')
    gw.set(gw.now() - 2 * HOUR) // the wall clock is set back ...
    gw.advance(5001) // ... while more than ackTimeoutMs pass
    await waitFor(() => svc.status.lastError?.code === 'TIMEOUT', 'the ack timeout')
    expect(svc.status.backlog).toBe(1)
  })
})

/** Proof 5: lifetime expiry, max-size push-out, replacing and null events, through the client API. */
import { describe, it, expect, afterEach } from 'vitest'
import { ManualClock } from '@herald/shared'
import { waitFor } from '@herald/shared/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'

describe('event categories as a client sees them', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('queueing: events past their lifetime are never delivered, and are purged', async () => {
    h = await Harness.create()
    const clock = new ManualClock(Date.now())
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
    const clock = new ManualClock(Date.now())
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

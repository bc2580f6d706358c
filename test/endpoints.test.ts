/** Endpoint behaviours a user relies on: retries, capacity policies, a wiped gateway, status. */
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import type { HeraldEvent } from '@herald/client-endpoint'
import { MemoryServicePersistence, OverflowPolicy, type ServiceStatus } from '@herald/service-endpoint'
import { ErrorCode, eventSize, PayloadKind, PersistenceError } from '@herald/shared'
import { waitFor } from '@herald/shared/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'

describe('endpoint behaviours', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('[CLI-RETRY-1] a throwing handler gets the same event again, reported each time, and nothing is skipped', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    const client = h.client(broker.url, 'alice', 'app')
    const failures: Array<[number, number]> = []
    client.on('handlerError', (info) => { failures.push([(info.event.payload as { i: number }).i, info.attempt]) })
    const seen: Array<[number, boolean]> = []
    let throwsLeft = 2
    const sub = await client.subscribe('readings', {}, (e: HeraldEvent) => {
      const i = (e.payload as { i: number }).i
      seen.push([i, e.redelivered])
      if (i === 1 && throwsLeft-- > 0) throw new Error('database unavailable')
    })
    for (let i = 0; i < 3; i++) await svc.raise('readings', { i })
    await waitFor(() => sub.delivered === 3, 'three events handled')
    expect(seen).toEqual([[0, false], [1, false], [1, true], [1, true], [2, false]])
    expect(failures).toEqual([[1, 1], [1, 2]])
    expect(sub.retries).toBe(2)
  })

  it('[SVC-CAPACITY-1] a full backlog drops the oldest (reported) or rejects the new event, as configured', async () => {
    h = await Harness.create()
    const one = eventSize({ seq: 1, name: 'readings', category: 'queueing', raisedAt: 0, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('{"i":0}') })
    const offline = 'mqtt://127.0.0.1:9'
    const dropping = await h.service(offline, 'svc-a', { persistence: new MemoryServicePersistence({ capacityBytes: one * 5, policy: OverflowPolicy.dropOldest }) })
    const dropped: number[] = []
    dropping.on('dropped', (info) => { dropped.push(...info.events.map((e) => e.seq)) })
    for (let i = 0; i < 8; i++) await dropping.raise('readings', { i })
    expect(dropped).toEqual([1, 2, 3])
    expect(dropping.counters.dropped).toBe(3)
    expect(dropping.status.backlog).toBe(5)

    const rejecting = await h.service(offline, 'svc-b', { persistence: new MemoryServicePersistence({ capacityBytes: one * 5, policy: OverflowPolicy.reject }) })
    const refused: string[] = []
    rejecting.on('refused', (info) => { refused.push(`${info.name} ${info.error.code} ${info.total}`) })
    for (let i = 0; i < 5; i++) await rejecting.raise('readings', { i })
    const err = await rejecting.raise('readings', { i: 5 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PersistenceError)
    expect((err as PersistenceError).code).toBe(ErrorCode.CAPACITY_EXCEEDED)
    expect(rejecting.status.backlog).toBe(5)
    expect(refused).toEqual(['readings CAPACITY_EXCEEDED 1'])
    expect(rejecting.counters.refused).toBe(1)
  })

  it('[SVC-SUPERSEDE-1] a refused replacing event supersedes nothing, and the next one replaces the one that is held', async () => {
    h = await Harness.create()
    const size = (name: string, payload: string): number => eventSize({ seq: 1, name, category: 'queueing', raisedAt: 0, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from(payload) })
    const small = JSON.stringify({ t: 1 })
    const capacity = size('readings', JSON.stringify({ i: 0 })) + 2 * size('temperature', small)
    const svc = await h.service('mqtt://127.0.0.1:9', 'svc-a', { persistence: new MemoryServicePersistence({ capacityBytes: capacity, policy: OverflowPolicy.reject }) })
    await svc.raise('readings', { i: 0 })
    await svc.raise('temperature', { t: 1 })
    const huge = await svc.raise('temperature', { t: 2, pad: 'x'.repeat(capacity) }).catch((e: unknown) => e)
    expect((huge as PersistenceError).code).toBe(ErrorCode.CAPACITY_EXCEEDED)
    await svc.raise('temperature', { t: 3 })
    const held = await svc.persistence.read(0, 10)
    expect(held.map((e) => [e.name, JSON.parse(Buffer.from(e.payload).toString()) as unknown])).toEqual([['readings', { i: 0 }], ['temperature', { t: 3 }]])
  })

  it('[STORE-DEDUP-1] a wiped gateway (a new persistence file) is a new instance, not a source of duplicates', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    const first = await h.service(broker.url, 'svc-a')
    const before = first.persistence.instance
    for (let i = 0; i < 10; i++) await first.raise('readings', { run: 1, i })
    await first.drained()
    await first.close()
    await rm(join(h.dir, 'svc-a.db'))
    const second = await h.service(broker.url, 'svc-a')
    expect(second.persistence.instance).not.toBe(before)
    for (let i = 0; i < 10; i++) await second.raise('readings', { run: 2, i })
    await second.drained()
    await c.until(20)
    expect(c.events.map((e) => e.sequence)).toEqual([...Array.from({ length: 10 }, (_, i) => i + 1), ...Array.from({ length: 10 }, (_, i) => i + 1)])
    expect(new Set(c.events.map((e) => e.id)).size).toBe(20)
  })

  it('[SVC-STATUS-1] status goes online, offline while the broker is away, and online again with the backlog', async () => {
    h = await Harness.create()
    const broker = await h.broker({ name: 'b' })
    const port = broker.listener.address.port
    const svc = await h.service(broker.url, 'svc-a')
    const states: Array<ServiceStatus['state']> = []
    svc.on('status', (s) => { if (states[states.length - 1] !== s.state) states.push(s.state) })
    const streamed: Array<ServiceStatus['state']> = []
    const reading = (async () => {
      for await (const s of svc.statusUpdates()) if (streamed[streamed.length - 1] !== s.state) streamed.push(s.state)
    })()
    await waitFor(() => svc.status.state === 'online', 'online')
    await broker.close()
    await waitFor(() => svc.status.state === 'offline' || svc.status.state === 'connecting', 'offline')
    await svc.raise('readings', { while: 'offline' })
    expect(svc.status.backlog).toBe(1)
    await h.broker({ name: 'b', port })
    await svc.drained()
    expect(svc.status).toMatchObject({ state: 'online', backlog: 0, durable: true, lastError: null })
    expect(svc.status.lastAckAt).not.toBeNull()
    expect(states.indexOf('offline')).toBeGreaterThanOrEqual(0)
    expect(states.lastIndexOf('online')).toBeGreaterThan(states.indexOf('offline'))
    expect(states[states.length - 1]).toBe('online')
    await svc.close()
    await reading // the stream ends at close()
    expect(streamed.indexOf('offline')).toBeGreaterThan(streamed.indexOf('online'))
    expect(streamed.slice(-2)).toEqual(['online', 'closed'])
  })
})

describe('start "new" across restarts', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('[CLI-START-1] a "new" subscription that started on an empty broker keeps every event stored while it was away', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const first = h.client(broker.url, 'alice', 'app', { durable: true })
    await collect(first, 'readings', { start: 'new' })
    await first.close()
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 3; i++) await svc.raise('readings', { i })
    await svc.drained()
    const again = await collect(h.client(broker.url, 'alice', 'app', { durable: true }), 'readings', { start: 'new' })
    await again.until(3)
    expect(again.payloads()).toEqual([{ i: 0 }, { i: 1 }, { i: 2 }])
  })
})

/** Endpoint behaviours a user relies on: retries, capacity policies, a wiped gateway, status. */
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import type { HeraldEvent } from '@herald/client-endpoint'
import { MemoryServicePersistence, OverflowPolicy, type RaiseItem, type ServiceStatus } from '@herald/service-endpoint'
import { ErrorCode, eventSize, HeraldError, PayloadKind, PersistenceError } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
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

describe('raiseBatch and source marks', () => {
  let h: Harness
  afterEach(async () => { await h.close() })
  const offline = 'mqtt://127.0.0.1:9'
  const size = (name: string, payload: unknown): number => eventSize({ seq: 1, name, category: 'queueing', raisedAt: 0, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from(JSON.stringify(payload)) })
  const heldOf = async (svc: { persistence: { read: (after: number, limit: number) => Promise<Array<{ name: string, payload: Uint8Array }>> } }): Promise<Array<[string, unknown]>> =>
    (await svc.persistence.read(0, 1_000)).map((e) => [e.name, e.payload.byteLength === 0 ? null : JSON.parse(Buffer.from(e.payload).toString()) as unknown])

  it('[SVC-MARK-1] a batch refused for capacity (reject policy) stores none of its events and none of its marks', async () => {
    h = await Harness.create()
    const over = { i: 2, note: 'over the capacity' }
    expect(size('readings', over)).toBeGreaterThan(size('temperature', { t: 1 }))
    // room for exactly: temperature, two readings, and one more temperature of the same size
    const capacity = 2 * size('temperature', { t: 1 }) + size('readings', { i: 0 }) + size('readings', { i: 1 })
    const svc = await h.service(offline, 'svc-a', { persistence: new MemoryServicePersistence({ capacityBytes: capacity, policy: OverflowPolicy.reject }) })
    const refused: string[] = []
    svc.on('refused', (info) => { refused.push(`${info.name} ${info.error.code} ${info.total}`) })
    await svc.raise('temperature', { t: 1 })
    const ok = await svc.raiseBatch([{ name: 'readings', payload: { i: 0 } }, { name: 'readings', payload: { i: 1 } }], { marks: new Map([['line-1', 'boot 1 seq 1']]) })
    expect(ok.map((r) => r.seq)).toEqual([2, 3])
    expect(ok.map((r) => r.id)).toEqual([2, 3].map((seq) => `${svc.persistence.instance}-${seq}`))

    // the replacing event would supersede { t: 1 }, but the whole batch does not fit
    const err = await svc.raiseBatch([{ name: 'temperature', payload: { t: 2 } }, { name: 'readings', payload: over }], { marks: new Map([['line-1', 'boot 1 seq 2'], ['line-2', 'boot 1 seq 1']]) }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PersistenceError)
    expect((err as PersistenceError).code).toBe(ErrorCode.CAPACITY_EXCEEDED)
    expect(await heldOf(svc)).toEqual([['temperature', { t: 1 }], ['readings', { i: 0 }], ['readings', { i: 1 }]])
    expect([...svc.marks()]).toEqual([['line-1', 'boot 1 seq 1']])
    expect(refused).toEqual(['temperature CAPACITY_EXCEEDED 1', 'readings CAPACITY_EXCEEDED 2'])
    expect(svc.counters.refused).toBe(2)
    expect(svc.counters.raised).toBe(3)
    // { t: 1 } is still the newest temperature: the next one replaces it in the backlog
    await svc.raise('temperature', { t: 3 })
    expect(await heldOf(svc)).toEqual([['readings', { i: 0 }], ['readings', { i: 1 }], ['temperature', { t: 3 }]])
  })

  it('raiseBatch checks every item as raise, raiseNull and raisePrivate do, before storing anything; the error names the item', async () => {
    h = await Harness.create()
    const svc = await h.service(offline, 'svc-a')
    const good: RaiseItem = { name: 'readings', payload: { i: 0 } }
    const bad: Array<[unknown, string]> = [
      [{ name: 'nope', payload: 1 }, ErrorCode.UNKNOWN_EVENT],
      [{ name: 'notices', payload: 1 }, ErrorCode.WRONG_CATEGORY], // private, no recipient
      [{ name: 'readings', isNull: true }, ErrorCode.WRONG_CATEGORY], // only replacing events can be null
      [{ name: 'readings', payload: 1, recipient: 'alice/app' }, ErrorCode.WRONG_CATEGORY], // a recipient on a queueing event
      [{ name: 'notices', payload: 1, recipient: 'not a key' }, ErrorCode.INVALID_ARGUMENT],
      [{ name: 'alarms', payload: 'x'.repeat(2000) }, ErrorCode.PAYLOAD_TOO_LARGE],
      [{ name: 'readings' }, ErrorCode.INVALID_ARGUMENT], // no payload
      [{ name: 'temperature', isNull: true, payload: 1 }, ErrorCode.INVALID_ARGUMENT],
      [{ name: 'readings', payload: { n: 1n } }, ErrorCode.INVALID_ARGUMENT], // not JSON
      [null, ErrorCode.INVALID_ARGUMENT]
    ]
    for (const [item, code] of bad) {
      const err = await svc.raiseBatch([good, { name: 'temperature', payload: { t: 1 } }, item as RaiseItem], { marks: new Map([['line-1', 'x']]) }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(HeraldError)
      expect({ code: (err as HeraldError).code, names: (err as HeraldError).message.startsWith('raiseBatch: items[2]: ') }).toEqual({ code, names: true })
    }
    expect(svc.status.backlog).toBe(0)
    expect(svc.marks().size).toBe(0)
    expect(svc.counters.raised).toBe(0)
    // a good batch: null and private items too, each as its single call would store it
    const results = await svc.raiseBatch([good, { name: 'temperature', isNull: true }, { name: 'notices', payload: { n: 1 }, recipient: 'alice/app' }])
    const held = await svc.persistence.read(0, 10)
    expect(held.map((e) => [e.seq, e.name, e.category, e.isNull, e.recipient])).toEqual([
      [results[0]?.seq, 'readings', 'queueing', false, null],
      [results[1]?.seq, 'temperature', 'replacing', true, null],
      [results[2]?.seq, 'notices', 'private', false, 'alice/app']
    ])
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3]) // no seq was spent on the items refused before
    // marks over the limits refuse the batch too (persistence judges them): nothing stored
    const badMarks = await svc.raiseBatch([good], { marks: new Map([['line-1', 'x'.repeat(201)]]) }).catch((e: unknown) => e)
    expect((badMarks as HeraldError).code).toBe(ErrorCode.INVALID_ARGUMENT)
    expect(svc.status.backlog).toBe(3)
    expect(svc.marks().size).toBe(0)
  })

  it('[SVC-SUPERSEDE-1] a batch supersedes the older unsent instance of a replacing event, and keeps both of its own', async () => {
    h = await Harness.create()
    const svc = await h.service(offline, 'svc-a')
    await svc.raise('temperature', { t: 0 })
    await svc.raiseBatch([{ name: 'temperature', payload: { t: 1 } }, { name: 'readings', payload: { i: 0 } }, { name: 'temperature', payload: { t: 2 } }])
    expect(await heldOf(svc)).toEqual([['temperature', { t: 1 }], ['readings', { i: 0 }], ['temperature', { t: 2 }]])
    // the newest instance is the batch's last one
    await svc.raiseNull('temperature')
    expect(await heldOf(svc)).toEqual([['temperature', { t: 1 }], ['readings', { i: 0 }], ['temperature', null]])
  })

  it('[SVC-KEY-2] a keyed event supersedes only the older unsent instance of its own key; keys survive a restart', async () => {
    h = await Harness.create()
    const svc = await h.service(offline, 'svc-a')
    await svc.raise('thermostat', { device: 't1', c: 1 })
    await svc.raise('thermostat', { device: 't2', c: 2 })
    await svc.raise('thermostat', { device: 't1', c: 3 })
    await svc.raiseBatch([{ name: 'valve', payload: 'a', key: 'v1' }, { name: 'valve', payload: 'b', key: 'v2' }, { name: 'thermostat', isNull: true, key: 't2' }])
    expect(await heldOf(svc)).toEqual([['thermostat', { device: 't1', c: 3 }], ['valve', 'a'], ['valve', 'b'], ['thermostat', null]])
    const held = await (svc as unknown as { persistence: { read: (a: number, l: number) => Promise<Array<{ key?: string }>> } }).persistence.read(0, 10)
    expect(held.map((e) => e.key)).toEqual(['t1', 'v1', 'v2', 't2'])
    await svc.close()
    // [SVC-KEY-3] read back from the file with their keys (superseding covers what this run raised, as for unkeyed events)
    const again = await h.service(offline, 'svc-a')
    await again.raise('valve', 'c', { key: 'v2' })
    await again.raise('valve', 'd', { key: 'v2' })
    const after = await (again as unknown as { persistence: { read: (a: number, l: number) => Promise<Array<{ key?: string }>> } }).persistence.read(0, 10)
    expect(after.map((e) => e.key)).toEqual(['t1', 'v1', 'v2', 't2', 'v2'])
    expect((await heldOf(again)).slice(-1)).toEqual([['valve', 'd']])
  })

  it('[SVC-MARK-1] marks are there when raiseBatch resolves, and after the endpoint restarts on its two-level persistence', async () => {
    h = await Harness.create()
    const first = await h.service(offline, 'svc-a')
    const marks = new Map([['device:A1', '3:41'], ['device:B7', '1:9']])
    await first.raiseBatch([{ name: 'readings', payload: { i: 0 } }, { name: 'readings', payload: { i: 1 } }], { marks })
    marks.set('device:A1', 'changed after the call')
    expect([...first.marks()].sort()).toEqual([['device:A1', '3:41'], ['device:B7', '1:9']])
    // no items: only the marks
    expect(await first.raiseBatch([], { marks: new Map([['device:B7', '1:10']]) })).toEqual([])
    expect([...first.marks()].sort()).toEqual([['device:A1', '3:41'], ['device:B7', '1:10']])
    expect(first.status.backlog).toBe(2)
    await first.close()

    const second = await h.service(offline, 'svc-a')
    expect(second.status.durable).toBe(true)
    expect([...second.marks()].sort()).toEqual([['device:A1', '3:41'], ['device:B7', '1:10']])
    expect(await heldOf(second)).toEqual([['readings', { i: 0 }], ['readings', { i: 1 }]])
    expect((await second.raiseBatch([{ name: 'readings', payload: { i: 2 } }], { marks: new Map([['device:A1', '3:42']]) })).map((r) => r.seq)).toEqual([3])
    expect(second.marks().get('device:A1')).toBe('3:42')
  })

  it('[EVT-ORDER-1] batches and single raises reach a client in raise order, each once', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    const svc = await h.service(broker.url, 'svc-a')
    const ids: string[] = []
    let i = 0
    const raising: Array<Promise<void>> = []
    for (let round = 0; round < 20; round++) {
      // concurrent, as a gateway pipelines them: a single raise, then a batch of `round` items
      const single = { i: i++ }
      const batch = Array.from({ length: round }, () => ({ name: 'readings', payload: { i: i++ } }))
      raising.push(svc.raise('readings', single).then((r) => { ids[single.i] = r.id }))
      raising.push(svc.raiseBatch(batch, { marks: new Map([['round', String(round)]]) }).then((rs) => {
        rs.forEach((r, k) => { ids[(batch[k]?.payload.i) ?? -1] = r.id })
      }))
    }
    await Promise.all(raising)
    expect(svc.marks().get('round')).toBe('19')
    await svc.drained()
    await c.until(i)
    expect(c.payloads()).toEqual(Array.from({ length: i }, (_, k) => ({ i: k })))
    expect(c.events.map((e) => e.id)).toEqual(ids)
    expect(new Set(c.events.map((e) => e.id)).size).toBe(i)
  })
})

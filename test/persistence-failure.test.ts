/** [SVC-PERSIST-FAIL-1] The gateway's SQLite level fails mid-stream: the endpoint says so and loses nothing it holds. */
import { describe, it, expect, afterEach } from 'vitest'
import { MemoryServicePersistence } from '@herald/service-endpoint'
import { ErrorCode, type PersistenceError } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { freePort } from './support/ports.js'

describe('service persistence failure', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('a full disk switches the endpoint to memory, reported once; every event still arrives exactly once', async () => {
    h = await Harness.create()
    // the broker comes only after the raises, so that the backlog surely outgrows the file:
    // a real SQLITE_FULL once the file reaches 160 KiB
    const port = await freePort()
    const url = `mqtt://127.0.0.1:${port}`
    const svc = await h.service(url, 'svc-a', { level2: { maxSizeBytes: 160 * 1024 } })
    const failures: Array<{ error: PersistenceError, lost: number }> = []
    svc.on('persistenceFailed', (info) => { failures.push(info) })
    const n = 3000
    const pad = 'x'.repeat(200)
    expect(svc.status.durable).toBe(true)
    for (let i = 0; i < n; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => svc.raise('readings', { i: i + j, pad })))
    }
    expect(failures.length).toBe(1)
    await h.broker({ port })
    const c = await collect(h.client(url, 'alice', 'app'), 'readings', { start: 'all' })
    await c.until(n)
    await svc.drained()
    expect(failures.length).toBe(1)
    expect(failures[0]?.error.code).toBe(ErrorCode.PERSISTENCE_FAILED)
    expect(failures[0]?.lost).toBe(0)
    expect(svc.status.durable).toBe(false)
    expect(c.events.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: n }, (_, i) => i))
    expect(new Set(c.events.map((e) => e.id)).size).toBe(n)
  })
})

describe('a restart on a file whose SQLite level failed ([SVC-SEQ-1])', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('events raised after the restart are not mistaken for the ones the failed run raised in memory', async () => {
    h = await Harness.create()
    const port = await freePort()
    const url = `mqtt://127.0.0.1:${port}`
    const pad = 'x'.repeat(200)
    // run 1: the file fills up (no broker yet), then the run goes on in memory and the broker gets it all
    const first = await h.service(url, 'svc-a', { level2: { maxSizeBytes: 96 * 1024 } })
    let failed = false
    first.on('persistenceFailed', () => { failed = true })
    let i = 0
    while (!failed) await Promise.all(Array.from({ length: 50 }, () => first.raise('readings', { i: i++, pad })))
    for (let k = 0; k < 300; k++) await first.raise('readings', { i: i++, pad }) // memory only: seqs the file never sees
    await h.broker({ port })
    const c = await collect(h.client(url, 'alice', 'app'), 'readings', { start: 'all' })
    await first.drained()
    const lastOfRunOne = first.persistence.lastSeq()
    await first.close() // the file is as the failure left it, as after a SIGKILL
    const runOne = i

    // run 2 on the same file: its lastSeq is behind what the broker holds for the instance
    const second = await h.service(url, 'svc-a', { level2: { maxSizeBytes: 96 * 1024 } })
    expect(second.persistence.instance).toBe(first.persistence.instance)
    expect(second.persistence.lastSeq()).toBeLessThan(lastOfRunOne - 300)
    for (let k = 0; k < 100; k++) await second.raise('readings', { i: i++, pad })
    await second.drained()
    await c.until(i, `all ${i} events at the client`).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; have ${c.events.length}, of run 2: ${c.events.filter((e) => (e.payload as { i: number }).i >= runOne).length}`)
    })
    expect(c.events.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: i }, (_, k) => k))
    expect(new Set(c.events.map((e) => e.id)).size).toBe(i)
  })
})

describe('ServiceEndpoint.whenAcked ([SVC-ACKED-1])', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('resolves once the broker has acknowledged the seq, at once for one already acknowledged, and rejects at close', async () => {
    h = await Harness.create()
    const port = await freePort()
    const url = `mqtt://127.0.0.1:${port}`
    const svc = await h.service(url, 'svc-a', { memoryOnly: true })
    const a = await svc.raise('readings', { i: 1 })
    const b = await svc.raise('readings', { i: 2 })
    let resolved = false
    const waiting = svc.whenAcked(b.seq).then(() => { resolved = true })
    expect(svc.acked).toBe(0)
    expect(resolved).toBe(false) // no broker exists yet

    await h.broker({ port })
    await waiting
    expect(svc.acked).toBeGreaterThanOrEqual(b.seq)
    expect(svc.status.backlog).toBe(0)
    await svc.whenAcked(a.seq) // covered already
    const never = svc.whenAcked(b.seq + 10)
    await svc.close()
    await expect(never).rejects.toMatchObject({ code: ErrorCode.CLOSED })
  })

  it('resolves for an event removed unsent (dropped to make room), without a broker', async () => {
    h = await Harness.create()
    const url = `mqtt://127.0.0.1:${await freePort()}`
    // room for one event: each raise pushes the one before out ([SVC-CAPACITY-1] dropOldest)
    const svc = await h.service(url, 'svc-a', { persistence: new MemoryServicePersistence({ capacityBytes: 400 }) })
    const dropped: number[] = []
    svc.on('dropped', ({ events }) => { dropped.push(...events.map((e) => e.seq)) })
    const pad = 'x'.repeat(200)
    const a = await svc.raise('readings', { i: 1, pad })
    const waiting = svc.whenAcked(a.seq)
    const b = await svc.raise('readings', { i: 2, pad })
    await waiting
    expect(dropped).toEqual([a.seq])
    expect(svc.acked).toBe(0)
    let resolved = false
    void svc.whenAcked(b.seq).then(() => { resolved = true }, () => {})
    await svc.raise('readings', { i: 3, pad }) // drops b
    await waitFor(() => resolved, 'the waiter of the dropped event')
  })
})

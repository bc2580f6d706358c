/** [SVC-PERSIST-FAIL-1] The gateway's SQLite level fails mid-stream: the endpoint says so and loses nothing it holds. */
import { describe, it, expect, afterEach } from 'vitest'
import { ErrorCode, type PersistenceError } from '@herald/shared'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'

describe('service persistence failure', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('a full disk switches the endpoint to memory, reported once; every event still arrives exactly once', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    // a real SQLITE_FULL once the file reaches 160 KiB
    const svc = await h.service(broker.url, 'svc-a', { level2: { maxSizeBytes: 160 * 1024 } })
    const failures: Array<{ error: PersistenceError, lost: number }> = []
    svc.on('persistenceFailed', (info) => { failures.push(info) })
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    const n = 3000
    const pad = 'x'.repeat(200)
    expect(svc.status.durable).toBe(true)
    for (let i = 0; i < n; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => svc.raise('readings', { i: i + j, pad })))
    }
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

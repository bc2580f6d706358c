import { describe, it, expect, afterEach } from 'vitest'
import type { HeraldEvent } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'

describe('the whole chain in one process', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('a service raises events, a client receives each once, in order, with its metadata', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    const got: HeraldEvent[] = []
    const client = h.client(broker.url, 'alice', 'app')
    await client.subscribe('readings', {}, (e) => { got.push(e) })
    const n = 500
    const results = await Promise.all(Array.from({ length: n }, (_, i) => svc.raise('readings', { i })))
    await waitFor(() => got.length >= n, `${n} events`)
    expect(got.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: n }, (_, i) => i))
    expect(got.map((e) => e.id)).toEqual(results.map((r) => r.id))
    const first = got[0] as HeraldEvent
    expect(first).toMatchObject({ serviceId: 'svc-a', name: 'readings', category: 'queueing', isNull: false, recipient: null, redelivered: false })
    expect(first.position).toBeGreaterThan(0)
    expect(first.age).toBeGreaterThanOrEqual(0)
    for (let i = 1; i < got.length; i++) expect((got[i] as HeraldEvent).position).toBeGreaterThan((got[i - 1] as HeraldEvent).position)
    await svc.drained()
    expect(svc.status.backlog).toBe(0)
  })
})

describe('large payloads', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('megabyte events travel in frames bounded by bytes, and arrive byte for byte', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    const got: HeraldEvent[] = []
    const client = h.client(broker.url, 'alice', 'app')
    await client.subscribe('blobs', {}, (e) => { got.push(e) })
    // 40 MiB in all: frames of up to 500 events would be far over the 17 MiB frame limit
    const blobs = Array.from({ length: 40 }, (_, i) => Buffer.alloc(1024 * 1024, i))
    await Promise.all(blobs.map((b) => svc.raise('blobs', b)))
    await waitFor(() => got.length >= 40, '40 blobs')
    expect(got.map((e) => Buffer.compare(e.payload as Uint8Array, blobs[got.indexOf(e)] as Buffer))).toEqual(Array(40).fill(0))
    expect(svc.counters.rejected).toBe(0)
  })
})

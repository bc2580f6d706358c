/**
 * Consumer groups end to end, in one process ([GROUP-*]): a real broker (SQLite, sockets on port 0),
 * real service and client endpoints. The kill proof with member processes is consumer-groups-kill.test.ts.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { ErrorCode } from '@herald/protocol'
import type { HeraldEvent } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { parseSite } from '@herald/node-runtime'
import { Harness } from './support/harness.js'
import { TEST_SITE_DOC } from './support/site.js'

describe('consumer groups', { timeout: 60_000 }, () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('two members share the events: each handled once, per-service order kept, the work spread [GROUP-JOIN-1] [GROUP-ORDER-1]', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const a = h.client(broker.url, 'alice', 'm1')
    const b = h.client(broker.url, 'alice', 'm2')
    const got: Array<{ m: string, e: HeraldEvent }> = []
    const ga = await a.subscribe('readings', { group: 'billing', segments: 4 }, (e) => { got.push({ m: 'a', e }) })
    const gb = await b.subscribe('readings', { group: 'billing', segments: 4 }, (e) => { got.push({ m: 'b', e }) })
    await waitFor(() => ga.segments.length === 2 && gb.segments.length === 2, 'segments spread 2 and 2', 10_000)
    const sa = await h.service(broker.url, 'svc-a')
    const sb = await h.service(broker.url, 'svc-b')
    const N = 300
    await Promise.all(Array.from({ length: N }, async (_, i) => { await sa.raise('readings', { i }); await sb.raise('readings', { i }) }))
    await waitFor(() => got.length >= 2 * N, `${2 * N} events handled`, 30_000)
    expect(got.length).toBe(2 * N)
    expect(new Set(got.map((g) => g.e.id)).size).toBe(2 * N)
    for (const svc of ['svc-a', 'svc-b']) {
      const seq = got.filter((g) => g.e.serviceId === svc).map((g) => (g.e.payload as { i: number }).i)
      expect(seq).toEqual(Array.from({ length: N }, (_, i) => i))
    }
    expect(got.some((g) => g.e.redelivered)).toBe(false)
    expect(ga.delivered + gb.delivered).toBe(2 * N)
  })

  it('a member with another service filter or segment count is refused with GROUP_MISMATCH [GROUP-JOIN-3]', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const a = h.client(broker.url, 'alice', 'm1')
    await a.subscribe('readings', { group: 'g', segments: 4 }, () => {})
    const b = h.client(broker.url, 'alice', 'm2')
    await expect(b.subscribe('readings', { group: 'g', segments: 8 }, () => {})).rejects.toMatchObject({ code: ErrorCode.GROUP_MISMATCH })
    await expect(b.subscribe('readings', { group: 'g', segments: 4, services: ['svc-a'] }, () => {})).rejects.toMatchObject({ code: ErrorCode.GROUP_MISMATCH })
    await expect(b.subscribe('temperature', { group: 'g', segments: 4 }, () => {})).rejects.toMatchObject({ code: ErrorCode.GROUP_MISMATCH })
    await expect(b.subscribe('notices', { group: 'p' }, () => {})).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT })
  })

  it('a member that leaves hands its segments over at once [GROUP-LEAVE-1]', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const a = h.client(broker.url, 'alice', 'm1')
    const b = h.client(broker.url, 'alice', 'm2')
    const got: HeraldEvent[] = []
    const ga = await a.subscribe('readings', { group: 'g', segments: 2 }, (e) => { got.push(e) })
    const gb = await b.subscribe('readings', { group: 'g', segments: 2 }, (e) => { got.push(e) })
    await waitFor(() => ga.segments.length === 1 && gb.segments.length === 1, 'one segment each', 10_000)
    await gb.unsubscribe()
    await waitFor(() => ga.segments.length === 2, 'both segments at a', 10_000)
    const sa = await h.service(broker.url, 'svc-a')
    const sb = await h.service(broker.url, 'svc-b')
    await Promise.all(Array.from({ length: 50 }, async (_, i) => { await sa.raise('readings', { i }); await sb.raise('readings', { i }) }))
    await waitFor(() => got.length >= 100, '100 events', 10_000)
    expect(new Set(got.map((e) => e.id)).size).toBe(100)
  })

  it('a site reload that withdraws access ends the membership, told as subscriptionError [GROUP-ACCESS-1]', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const a = h.client(broker.url, 'alice', 'm1')
    const b = h.client(broker.url, 'bob', 'm1')
    const errors: string[] = []
    b.on('subscriptionError', ({ key, error }) => { errors.push(`${key} ${error.code}`) })
    const ga = await a.subscribe('readings', { group: 'g', segments: 2 }, () => {})
    const gb = await b.subscribe('readings', { group: 'g', segments: 2 }, () => {})
    // another user's group of the same name is another group: each has both segments
    await waitFor(() => ga.segments.length === 2 && gb.segments.length === 2, 'both segments at each', 10_000)
    // bob may no longer receive readings
    const doc = { ...TEST_SITE_DOC, events: TEST_SITE_DOC.events.map((e) => e.name === 'readings' ? { ...e, access: { roles: ['operator'] } } : e) }
    broker.broker.reloadSite(await parseSite(doc))
    await waitFor(() => errors.length === 1, 'bob told his access was withdrawn', 10_000)
    expect(errors).toEqual([`group:g ${ErrorCode.NOT_AUTHORIZED}`])
    expect(gb.segments).toEqual([])
    expect(ga.segments).toEqual([0, 1])
  })

  it('keeps the segments\' positions in the event store\'s file across a broker restart [GROUP-STORE-1]', async () => {
    h = await Harness.create()
    let broker = await h.broker({ name: 'b' })
    const port = Number(new URL(broker.url).port)
    const got: HeraldEvent[] = []
    const a = h.client(broker.url, 'alice', 'm1')
    await a.subscribe('readings', { group: 'g', segments: 4 }, (e) => { got.push(e) })
    const sa = await h.service(broker.url, 'svc-a')
    await Promise.all(Array.from({ length: 100 }, (_, i) => sa.raise('readings', { i })))
    await waitFor(() => got.length >= 100, '100 events', 10_000)
    // the done mark after the last handler goes out right after it; let it reach the broker
    await new Promise((resolve) => setTimeout(resolve, 200))
    await a.close()
    await sa.close()
    await broker.close()
    broker = await h.broker({ name: 'b', port })
    const b = h.client(broker.url, 'alice', 'm2')
    await b.subscribe('readings', { group: 'g', segments: 4 }, (e) => { got.push(e) })
    const sa2 = await h.service(broker.url, 'svc-a')
    await Promise.all(Array.from({ length: 10 }, (_, i) => sa2.raise('readings', { i: 100 + i })))
    await waitFor(() => got.length >= 110, '110 events', 10_000)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(got.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: 110 }, (_, i) => i))
    expect(got.some((e) => e.redelivered)).toBe(false)
  })
})

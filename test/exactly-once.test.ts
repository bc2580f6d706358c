/**
 * Proofs 1-4 of the core issue: exactly-once through a broker outage, broker SIGKILLs, service
 * SIGKILLs and client SIGKILLs, with real processes, sockets and SQLite files. Counts are exact.
 */
import { readFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, it, expect, afterEach } from 'vitest'
import type { HeraldEvent } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { startBrokerProcess, startFixture, writeTestSite, type Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'
import { freePort } from './support/ports.js'

const N = 10_000

/** Checks that `got` holds payloads 0..n-1 exactly once each, in order, with distinct ids. */
function expectExactlyOnceInOrder (got: readonly HeraldEvent[], n: number): void {
  const is = got.map((e) => (e.payload as { i: number }).i)
  expect(got.length).toBe(n)
  expect(new Set(got.map((e) => e.id)).size).toBe(n)
  expect(is).toEqual(Array.from({ length: n }, (_, i) => i))
}

// real processes on 2 shared cores: generous deadlines, since these prove counts, not speed
describe('exactly once, end to end', { timeout: 240_000 }, () => {
  let h: Harness
  const procs: Proc[] = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill()
    await h.close()
  })

  it(`1. ${N} events raised while the broker is down reach the client once, in order, after it starts`, async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const port = await freePort()
    const url = `mqtt://127.0.0.1:${port}`
    const svc = await h.service(url, 'svc-a')
    await Promise.all(Array.from({ length: N }, (_, i) => svc.raise('readings', { i })))
    expect(svc.status.backlog).toBe(N)
    expect(svc.status.state).not.toBe('online')

    const broker = await startBrokerProcess(site, join(h.dir, 'broker'), port)
    procs.push(broker.proc)
    const got: HeraldEvent[] = []
    const client = h.client(url, 'alice', 'app')
    await client.subscribe('readings', {}, (e) => { got.push(e) })
    await waitFor(() => got.length >= N, `${N} events at the client`, 180_000)
    await svc.drained()
    expectExactlyOnceInOrder(got, N)
    expect(svc.status.backlog).toBe(0)
  })

  it(`2. the broker SIGKILLed 3 times during a stream of ${N}: every resolved raise reaches the client exactly once`, async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const dataDir = join(h.dir, 'broker')
    let broker = await startBrokerProcess(site, dataDir, 0)
    procs.push(broker.proc)
    const { url, port } = broker
    const svc = await h.service(url, 'svc-a')
    const got: HeraldEvent[] = []
    const client = h.client(url, 'alice', 'app')
    await client.subscribe('readings', {}, (e) => { got.push(e) })

    let kills = 0
    const raising = (async () => {
      for (let i = 0; i < N; i += 100) {
        await Promise.all(Array.from({ length: 100 }, (_, j) => svc.raise('readings', { i: i + j })))
        await new Promise((resolve) => setImmediate(resolve))
      }
    })()
    for (const threshold of [N / 4, N / 2, (3 * N) / 4]) {
      await waitFor(() => got.length >= threshold, `${threshold} events before kill ${kills + 1}`, 180_000)
      await broker.proc.kill()
      kills++
      broker = await startBrokerProcess(site, dataDir, port)
      procs.push(broker.proc)
    }
    await raising
    await waitFor(() => got.length >= N, `${N} events at the client`, 180_000)
    await svc.drained()
    expect(kills).toBe(3)
    expectExactlyOnceInOrder(got, N)
  })

  it(`3. the service process SIGKILLed mid-stream and restarted: no resolved raise lost, none stored twice`, async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const db = join(h.dir, 'gateway.db')
    const got: HeraldEvent[] = []
    const client = h.client(broker.url, 'alice', 'app')
    await client.subscribe('readings', {}, (e) => { got.push(e) })

    const confirmed = new Set<number>()
    const unconfirmedRaised = new Set<number>()
    let from = 0
    let kills = 0
    const instances = new Set<string>()
    for (;;) {
      const svc = startFixture('service-proc.mjs', { url: broker.url, serviceId: 'svc-a', secret: SECRETS['svc-a'], db, from, count: N - from, event: 'readings' })
      procs.push(svc)
      instances.add((await svc.waitLine((l) => l.startsWith('instance '))).slice(9))
      if (kills < 3) {
        // kill once this run has had some raises confirmed and some acknowledged
        await svc.waitLine((l) => l.startsWith('ok ') && Number(l.slice(3)) >= from + 1500)
        await svc.kill()
        kills++
      } else {
        await svc.waitLine((l) => l === 'done', 180_000)
      }
      const oks = svc.lines.filter((l) => l.startsWith('ok ')).map((l) => Number(l.slice(3)))
      for (const i of oks) confirmed.add(i)
      const next = Math.max(from - 1, ...oks) + 1
      // a killed run may have raised, durably or not, any event of its range that it did not confirm;
      // the next run raises those from `next` on again, as new events with new ids
      const okSet = new Set(oks)
      for (let i = from; i < N; i++) if (!okSet.has(i)) unconfirmedRaised.add(i)
      if (kills === 3 && svc.lines.includes('done')) break
      from = next
    }
    expect(instances.size).toBe(1) // the same SQLite file keeps its persistence instance
    await waitFor(() => new Set(got.map((e) => (e.payload as { i: number }).i)).size >= N, 'every payload at the client', 180_000)
    const ids = got.map((e) => e.id)
    expect(new Set(ids).size).toBe(ids.length) // nothing stored twice
    const received = new Set(got.map((e) => (e.payload as { i: number }).i))
    for (const i of confirmed) expect(received.has(i)).toBe(true)
    expect(confirmed.size).toBeGreaterThan(N / 2)
    expect(broker.broker.stats().storedEvents).toBe(got.length)
    // a payload appears twice only if a killed run raised it without confirming, and the next run raised it again
    const counts = new Map<number, number>()
    for (const e of got) { const i = (e.payload as { i: number }).i; counts.set(i, (counts.get(i) ?? 0) + 1) }
    for (const [i, c] of counts) if (c > 1) expect(unconfirmedRaised.has(i)).toBe(true)
  })

  for (const mode of ['default', 'transactional'] as const) {
    it(`4. the client process SIGKILLed 4 times mid-stream (${mode} mode): ${mode === 'default' ? 'at most one flagged redelivery per kill, no unflagged duplicate' : 'each side effect exactly once'}`, async () => {
      h = await Harness.create()
      const broker = await h.broker()
      const svc = await h.service(broker.url, 'svc-a')
      await Promise.all(Array.from({ length: N }, (_, i) => svc.raise('readings', { i })))
      await svc.drained()

      const db = join(h.dir, `${mode}.db`)
      const log = join(h.dir, 'effects.log')
      const args = { url: broker.url, user: 'alice', password: SECRETS.alice, clientName: 'worker', event: 'readings', mode, db, log, expect: N }
      // default mode: the log is read as it grows; transactional mode: the child reports its own count,
      // and the test opens the database only once the child is gone
      const handled = (c: Proc): number => {
        if (mode === 'transactional') {
          const last = c.lines.filter((l) => l.startsWith('total ')).pop()
          return last === undefined ? 0 : Number(last.slice(6))
        }
        return existsSync(log) ? new Set(readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ')[0])).size : 0
      }
      let kills = 0
      for (let run = 0; run < 5; run++) {
        const c = startFixture('client-proc.mjs', args)
        procs.push(c)
        await c.waitLine((l) => l === 'subscribed')
        if (run < 4) {
          await c.waitLine((l) => l.startsWith('n ') && Number(l.slice(2)) >= 1000 + run * 300)
          await c.kill()
          kills++
        } else {
          await waitFor(() => handled(c) >= N, `${N} events handled`, 180_000).catch((err: unknown) => {
            throw new Error(`${(err as Error).message}; handled ${handled(c)}; client said ${c.lines.slice(-3).join(' | ')}; stderr: ${c.stderr.slice(-3000)}`)
          })
          await c.kill()
        }
      }
      expect(kills).toBe(4)
      if (mode === 'transactional') {
        const d = new Database(db, { readonly: true })
        const rows = d.prepare('SELECT id, COUNT(*) AS c FROM effects GROUP BY id').all() as Array<{ id: string, c: number }>
        d.close()
        expect(rows.length).toBe(N)
        expect(rows.filter((r) => r.c !== 1)).toEqual([])
      } else {
        const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' '))
        const seen = new Set<string>()
        let flagged = 0
        const unflaggedDuplicates: string[] = []
        for (const [id, , redelivered] of lines) {
          if (redelivered === '1') flagged++
          if (seen.has(id!) && redelivered !== '1') unflaggedDuplicates.push(id!)
          seen.add(id!)
        }
        expect(seen.size).toBe(N)
        expect(unflaggedDuplicates).toEqual([])
        expect(flagged).toBeLessThanOrEqual(kills)
        expect(lines.length - N).toBeLessThanOrEqual(flagged)
      }
    })
  }
})

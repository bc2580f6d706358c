/**
 * Batches ([CLI-BATCH-*]) and concurrent handlers with per-key order ([CLI-CONC-*]) end to end, with
 * real processes: a `herald broker` process, two service endpoint processes raising 2,000 events
 * while a client endpoint process handles them, SIGKILLed at random several times and started again.
 * Every handler start is an fsync'd line in an append-only log: every event handled, none handled a
 * second time unless flagged `redelivered`, at most `concurrency` (or one batch) redelivered per kill,
 * per-device order kept in handler start order; transactional batches: exactly once in the app DB.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, it, expect, afterEach } from 'vitest'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { startBrokerProcess, startFixture, writeTestSite, type Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'

const N = 2000
const DEVICES = 5
const KILLS = 5

interface Line { i: number, device: string, position: number, redelivered: boolean, run: number }

/** The handler starts logged, with the run (client process) each was in. */
function lines (log: string): Line[] {
  if (!existsSync(log)) return []
  let run = -1
  const out: Line[] = []
  for (const l of readFileSync(log, 'utf8').split('\n').filter(Boolean)) {
    if (l === 'run') {
      run++
      continue
    }
    const [i, device, position, r] = l.split(' ')
    out.push({ i: Number(i), device: device as string, position: Number(position), redelivered: r === '1', run })
  }
  return out
}

const lastPos = (p: Proc): number => Number(p.lines.filter((l) => l.startsWith('pos ')).pop()?.slice(4) ?? 0)

describe('batches and concurrent handlers, SIGKILLed while events flow', { timeout: 300_000 }, () => {
  let h: Harness
  const procs: Proc[] = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill()
    await h.close()
  })

  /** A broker, two service processes raising N events { i, device } between them, and a client process killed KILLS times. */
  async function run (clientArgs: object, dbName: string): Promise<{ kills: number, log: string, db: string }> {
    h = await Harness.create()
    const db = join(h.dir, dbName)
    const log = join(h.dir, 'handled.log')
    const broker = await startBrokerProcess(await writeTestSite(h.dir), join(h.dir, 'broker'), 0)
    procs.push(broker.proc)
    const args = { url: broker.url, user: 'alice', password: SECRETS.alice, clientName: 'worker', event: 'readings', db, log, ...clientArgs }
    // the first client records where it starts (everything), before any event is raised
    let c = startFixture('parallel-client.mjs', args)
    procs.push(c)
    await c.waitLine((l) => l === 'subscribed')
    const services = [
      startFixture('service-proc.mjs', { url: broker.url, serviceId: 'svc-a', secret: SECRETS['svc-a'], db: join(h.dir, 'svc-a.db'), from: 0, count: N / 2, event: 'readings', devices: DEVICES }),
      startFixture('service-proc.mjs', { url: broker.url, serviceId: 'svc-b', secret: SECRETS['svc-b'], db: join(h.dir, 'svc-b.db'), from: N / 2, count: N / 2, event: 'readings', devices: DEVICES })
    ]
    procs.push(...services)
    let kills = 0
    for (; kills < KILLS; kills++) {
      // a kill after some progress, at a random moment
      const from = lastPos(c)
      const target = from + 50 + Math.floor(Math.random() * 250)
      await waitFor(() => lastPos(c) >= target || services.every((s) => s.lines.includes('done')), 'progress before a kill', 120_000)
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10))
      await c.kill()
      c = startFixture('parallel-client.mjs', args)
      procs.push(c)
      await c.waitLine((l) => l === 'subscribed')
    }
    await Promise.all(services.map((s) => s.waitLine((l) => l === 'done')))
    // through every event: the broker's last position is the highest any run handled or will handle
    const watcher = h.client(broker.url, 'alice', 'watcher')
    let head = 0
    let seen = 0
    await watcher.subscribe('readings', {}, (e) => { head = Math.max(head, e.position); seen++ })
    await waitFor(() => seen >= N, `${N} events at the watcher`, 60_000)
    await waitFor(() => lastPos(c) >= head, 'the client through every event', 120_000)
    await c.kill()
    return { kills, log, db }
  }

  /**
   * Every event handled, unflagged duplicates none, redeliveries bounded, per-device order in start
   * order: with concurrency a redelivery repeats the device's last started event at most; a batch
   * comes back whole, so there only a flagged event may go back.
   */
  function check (log: string, kills: number, perKill: number, batch = false): void {
    const ls = lines(log)
    const seen = new Set<number>()
    const unflaggedTwice: number[] = []
    for (const l of ls) {
      if (seen.has(l.i) && !l.redelivered) unflaggedTwice.push(l.i)
      seen.add(l.i)
    }
    expect(seen.size).toBe(N)
    expect(unflaggedTwice).toEqual([])
    expect(ls.length - N).toBeLessThanOrEqual(kills * perKill)
    // what is handled again was in flight when a run was killed: grouped by the run that last
    // started it (a run killed before it got to them leaves them to the next), at most perKill per run
    const lastRun = new Map<number, number>()
    const inFlightAtKill = new Map<number, number>()
    for (const l of ls) {
      const before = lastRun.get(l.i)
      if (before !== undefined) inFlightAtKill.set(before, (inFlightAtKill.get(before) ?? 0) + 1)
      lastRun.set(l.i, l.run)
    }
    expect(Math.max(0, ...inFlightAtKill.values())).toBeLessThanOrEqual(perKill)
    // the kills landed while handlers ran (8 at a time, or a batch, each 0-5 ms): some came back flagged
    expect(ls.filter((l) => l.redelivered).length).toBeGreaterThan(0)
    // [CLI-CONC-2] per device, handlers started in position order (a redelivery repeats one, never goes back further)
    const byDevice = new Map<string, number[]>()
    for (const l of ls) byDevice.set(l.device, [...(byDevice.get(l.device) ?? []), l.position])
    expect([...byDevice.keys()].sort()).toEqual(Array.from({ length: DEVICES }, (_, d) => `d${d}`))
    for (const [device, ps] of byDevice) {
      const mine = ls.filter((l) => l.device === device)
      const back = ps.filter((p, k) => k > 0 && p < (ps[k - 1] as number) && !(batch && mine[k]?.redelivered === true))
      expect(back, `device ${device} went back`).toEqual([])
    }
  }

  it('concurrency 8 sequenced by a payload field: every event handled, none unflagged twice, at most 8 redelivered per kill, per-device order kept [CLI-CONC-1..3]', async () => {
    const { kills, log } = await run({ mode: 'concurrent', concurrency: 8 }, 'positions.db')
    expect(kills).toBe(KILLS)
    check(log, kills, 8)
  })

  it('batches of up to 50: a batch killed mid-way comes back flagged, nothing lost, nothing unflagged twice [CLI-BATCH-2]', async () => {
    const { kills, log } = await run({ mode: 'batch', maxEvents: 50, maxWaitMs: 20 }, 'positions.db')
    expect(kills).toBe(KILLS)
    check(log, kills, 50, true)
  })

  it('transactional batches: every event exactly once in the application database [CLI-BATCH-4]', async () => {
    const { kills, db } = await run({ mode: 'tx-batch', maxEvents: 50, maxWaitMs: 20 }, 'app.db')
    expect(kills).toBe(KILLS)
    const d = new Database(db, { readonly: true })
    const rows = d.prepare('SELECT i, COUNT(*) AS c FROM effects GROUP BY i ORDER BY i').all() as Array<{ i: number, c: number }>
    d.close()
    expect(rows.map((r) => r.i)).toEqual(Array.from({ length: N }, (_, i) => i))
    expect(rows.filter((r) => r.c !== 1)).toEqual([])
  })
})

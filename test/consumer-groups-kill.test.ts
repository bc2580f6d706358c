/**
 * The consumer group proof of issue 11 §7 ([GROUP-*]): 3 member processes of one group, SIGKILLed
 * and restarted at random while 20,000 events flow from 8 services through a real broker process
 * (SQLite, short lease). Every member appends one fsync'd line per handled event to one O_APPEND
 * log, so the log's order is the order handlers started in.
 */
import { readFileSync, existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { startBrokerProcess, startFixture, type Proc } from './support/processes.js'

const SERVICES = Array.from({ length: 8 }, (_, i) => ({ id: `svc-${i + 1}`, secret: `secret-${i + 1}-xxxxxxxx` }))
const PER_SERVICE = 2500
const N = SERVICES.length * PER_SERVICE
const LEASE_MS = 1500
const SEGMENTS = 16

interface Line { id: string, service: string, seq: number, redelivered: boolean, pid: number, at: number }

function readLog (path: string): Line[] {
  if (!existsSync(path)) return []
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => {
    const [id, service, seq, r, pid, at] = l.split(' ')
    return { id: id!, service: service!, seq: Number(seq), redelivered: r === '1', pid: Number(pid), at: Number(at) }
  })
}

function distinct (lines: readonly Line[]): number {
  return new Set(lines.map((l) => l.id)).size
}

describe('consumer group under SIGKILL', { timeout: 240_000 }, () => {
  let h: Harness
  const procs: Proc[] = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill()
    await h.close()
  })

  it(`3 members killed and restarted at random while ${N} events flow: each handled, once unless flagged, in order per service, nothing stranded [GROUP-REDELIVER-1] [GROUP-LEASE-1]`, async () => {
    h = await Harness.create()
    const site = join(h.dir, 'site.json')
    await writeFile(site, JSON.stringify({
      events: [{ name: 'jobs', category: 'queueing', lifetime: '1d', maxQueueSize: 1_000_000, access: 'authenticated' }],
      services: SERVICES.map((s) => ({ id: s.id, secret: s.secret, events: ['jobs'] })),
      users: [{ name: 'alice', password: 'alice-password', roles: [] }]
    }))
    const broker = await startBrokerProcess(site, join(h.dir, 'broker'), 0, ['--group-lease', `${LEASE_MS}ms`])
    procs.push(broker.proc)
    const log = join(h.dir, 'handled.log')
    const names = ['m1', 'm2', 'm3']
    const live = new Map<string, Proc>()
    /** Members started and not subscribed yet: not killed then, not started twice. */
    const starting = new Set<string>()
    /** Per member process: the most segments it held while it lived (a kill redelivers at most that many). */
    const held = new Map<Proc, number>()
    const maxHeld = (p: Proc): number => Math.max(0, ...p.lines.filter((l) => l.startsWith('held ')).map((l) => Number(l.slice(5))))
    const start = async (name: string): Promise<void> => {
      const p = startFixture('group-member.mjs', { url: broker.url, user: 'alice', password: 'alice-password', clientName: name, event: 'jobs', group: 'workers', segments: SEGMENTS, log })
      procs.push(p)
      starting.add(name)
      await p.waitLine((l) => l === 'subscribed')
      starting.delete(name)
      live.set(name, p)
    }
    const kill = async (name: string): Promise<number> => {
      const p = live.get(name)!
      live.delete(name)
      await p.kill()
      held.set(p, maxHeld(p))
      return maxHeld(p)
    }
    for (const n of names) await start(n)
    const svc = startFixture('multi-service-proc.mjs', { url: broker.url, services: SERVICES, dir: h.dir, count: PER_SERVICE, event: 'jobs' })
    procs.push(svc)

    // kills at random while events flow: a member comes back at once (its lease) or after the lease (taken over)
    let kills = 0
    let bound = 0
    /** Members restarted only after their lease ran out (their segments were taken over meanwhile). */
    const restarts: Array<Promise<void>> = []
    // a new seed each run, printed so that a failing run's choices can be replayed
    let random = Date.now() % 2147483648
    process.stderr.write(`consumer-groups-kill: seed ${random}\n`)
    const rnd = (): number => { random = (random * 1103515245 + 12345) % 2147483648; return random / 2147483648 }
    while (distinct(readLog(log)) < N * 0.7 && kills < 12) {
      await new Promise((resolve) => setTimeout(resolve, 400 + rnd() * 800))
      const name = names[Math.floor(rnd() * names.length)]!
      if (!live.has(name) || live.size < 2) continue
      bound += await kill(name)
      kills++
      if (rnd() < 0.5) await start(name)
      else restarts.push(new Promise((resolve) => setTimeout(resolve, LEASE_MS + 500)).then(async () => { if (!live.has(name) && !starting.has(name)) await start(name) }))
    }
    await Promise.all(restarts)
    await svc.waitLine((l) => l === 'done', 120_000)
    for (const n of names) if (!live.has(n) && !starting.has(n)) await start(n)
    // the last kill, while events are still to be handled: that member does not come back, the
    // others take its segments once its lease runs out
    await waitFor(() => distinct(readLog(log)) >= N * 0.8, `${N * 0.8} events handled`, 120_000)
    // the member that handled the most of the last 300 events: it surely holds segments with work left
    const recent = readLog(log).slice(-300)
    const victim = [...live.keys()].sort((x, y) => recent.filter((l) => l.pid === live.get(y)!.child.pid).length - recent.filter((l) => l.pid === live.get(x)!.child.pid).length)[0]!
    const lastPid = live.get(victim)!.child.pid!
    bound += await kill(victim)
    kills++
    const lastKill = Date.now()
    await waitFor(() => distinct(readLog(log)) >= N, `${N} events handled`, 120_000).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; handled ${distinct(readLog(log))}; members: ${[...live.values()].map((p) => p.stderr.slice(-500)).join(' | ')}`)
    })

    const lines = readLog(log)
    expect(kills).toBeGreaterThanOrEqual(5)
    expect(distinct(lines)).toBe(N)
    // none twice unless flagged; at most (segments held) redeliveries per kill
    const seen = new Set<string>()
    const unflagged: string[] = []
    for (const l of lines) {
      if (seen.has(l.id) && !l.redelivered) unflagged.push(l.id)
      seen.add(l.id)
    }
    expect(unflagged).toEqual([])
    const flagged = lines.filter((l) => l.redelivered).length
    expect(flagged).toBeLessThanOrEqual(bound)
    expect(lines.length - N).toBeLessThanOrEqual(flagged)
    // per-service order across members and takeovers, by handling start: an unflagged line is always
    // the next event of its service; a flagged one is that or the one before again
    const order: string[] = []
    for (const s of SERVICES) {
      let last = 0
      for (const l of lines.filter((x) => x.service === s.id)) {
        if (l.seq === last + 1) last = l.seq
        else if (!(l.redelivered && l.seq === last)) order.push(`${s.id}: seq ${l.seq} after ${last}${l.redelivered ? ' (flagged)' : ''}`)
      }
      expect(last).toBe(PER_SERVICE)
    }
    expect(order).toEqual([])
    // the members' pids: the work was spread, and the killed processes handled some of it
    expect(new Set(lines.map((l) => l.pid)).size).toBeGreaterThan(3)
    // nothing stranded: every service the last killed member was handling when it died (its last
    // line before the kill is that member's) goes on at another member within the lease plus a margin
    const before = lines.filter((l) => l.at <= lastKill)
    const stranded: string[] = []
    let takenOver = 0
    for (const s of SERVICES) {
      const mine = before.filter((l) => l.service === s.id)
      const lastBefore = mine[mine.length - 1]
      if (lastBefore === undefined || lastBefore.pid !== lastPid || lastBefore.seq === PER_SERVICE) continue
      const next = lines.find((l) => l.service === s.id && l.at > lastKill)
      if (next === undefined || next.at - lastKill > LEASE_MS + 3000) stranded.push(`${s.id}: next after ${next === undefined ? 'never' : `${next.at - lastKill} ms`}`)
      else takenOver++
    }
    expect(stranded).toEqual([])
    expect(takenOver).toBeGreaterThan(0)
  })
})

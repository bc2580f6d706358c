/**
 * Power loss at the client machine (issue 8, item 8; [CLI-POS-5]). A real broker and a real service
 * endpoint in this process; the client in a child process whose positions file loses every write not
 * fsync'd at each cut (test/support/power-cut.ts: the process is SIGKILLed, then its directory is put
 * back to the contents each file had at its last fsync). Each run after a cut gets a new boot id, as
 * the machine reboots. The handler's effects (a log outside the cut directory) are what the
 * application did, and are kept.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it, expect, afterAll, afterEach, beforeAll } from 'vitest'
import { MemoryPositionStore } from '@herald/client-endpoint'
import type { ServiceEndpoint } from '@herald/service-endpoint'
import { ConfigError } from '@herald/protocol'
import { HandSetClock } from './support/clocks.js'
import { seededRandom, waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { PowerCutDir, buildPowerCutLibrary } from './support/power-cut.js'
import type { Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'

const N = 4000
/** Interruptions per test: power cuts, and in the power-loss tests every third a plain SIGKILL (same boot). */
const CUTS = 6
const WINDOW = 250

interface Outcome {
  /** Events 0..N-1 never handled. */
  lost: number
  /** Handler calls for an event handled before, with redelivered: false. */
  silent: number
  /** Handler calls with redelivered: true. */
  flagged: number
  /** Per cut (or kill): handler calls, in the run after it, for events handled before it. */
  rollbacks: number[]
}

/** Raises events i = from..to-1 as a stream: 20 at a time, each group durable before the next. */
async function stream (svc: ServiceEndpoint, from: number, to: number, stop: () => boolean): Promise<void> {
  for (let i = from; i < to && !stop(); i += 20) {
    await Promise.all(Array.from({ length: Math.min(20, to - i) }, (_, k) => svc.raise('readings', { i: i + k })))
    // the stream's pace (about 2,000 events/s at most): cuts land while it flows, not after it
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe('power loss at the client machine', { timeout: 300_000 }, () => {
  let library = ''
  let h: Harness | null = null
  const procs: Proc[] = []
  let build: Harness | null = null
  beforeAll(async () => {
    // kept until the end of the file: every test preloads it
    build = await Harness.create()
    library = buildPowerCutLibrary(build.dir)
  })
  afterAll(async () => { await build?.close() })
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill()
    await h?.close()
    h = null
  })

  async function run (durability: 'power-loss' | 'process-crash', start: 'new' | 'all', seed: number, withKills = false): Promise<Outcome> {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    const dir = new PowerCutDir(join(h.dir, 'client'), library)
    mkdirSync(dir.path, { recursive: true })
    const log = join(h.dir, 'effects.log')
    const rnd = seededRandom(seed)
    const lines = (): string[][] => existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ')) : []
    let producer: Promise<void> | null = null
    let stopped = false
    let streamDone = false
    let boot = 0
    for (let r = 0; r <= CUTS; r++) {
      const c = dir.start('power-cut-client.mjs', {
        url: broker.url, user: 'alice', password: SECRETS.alice, clientName: 'worker', event: 'readings',
        start, durability, window: WINDOW, db: join(dir.path, 'positions.db'), log, bootId: `boot-${boot}`
      })
      procs.push(c)
      await c.waitLine((l) => l === 'subscribed')
      // with start 'new', the stream begins once the first subscription is in place
      producer ??= stream(svc, 0, N, () => stopped).finally(() => { streamDone = true })
      if (r < CUTS) {
        const at = 30 + Math.floor(rnd() * 600)
        // or at once when the stream is over (a client that skipped the rest would wait forever)
        const handled = (): number => Number(c.lines.findLast((l) => l.startsWith('n '))?.slice(2) ?? 0)
        await waitFor(() => handled() >= at || streamDone, `${at} events handled in run ${r}`, 120_000)
        await c.kill()
        // a process crash only: the OS keeps every write, and the machine keeps its boot id; this
        // one lands while a range flagged by the cut before is being delivered again
        if (withKills && r % 3 === 1) continue
        dir.cut()
        boot++
      } else {
        await producer
        // a last event after the stream, so that the client can be seen to have caught up
        await svc.raise('readings', { i: N })
        await waitFor(() => lines().some((l) => l[0] === String(N)), 'the last event at the client', 180_000).catch((err: unknown) => {
          throw new Error(`${(err as Error).message}; client said ${c.lines.slice(-3).join(' | ')}; stderr: ${c.stderr.slice(-3000)}`)
        })
        await c.kill()
      }
    }
    stopped = true
    await producer
    const all = lines()
    const seen = new Set<string>()
    const out: Outcome = { lost: 0, silent: 0, flagged: 0, rollbacks: [] }
    let before = new Set<string>()
    let runs = 0
    // for a failure: which run (and boot) handled each event first, and every silent redelivery
    const firstRun = new Map<string, number>()
    const firstAt = new Map<string, string>()
    const boots: string[] = []
    const silent: string[] = []
    for (const [i, position, flag, started] of all) {
      if (i === 'run') {
        // a new run: the one before it ended in a cut (all but the first)
        if (++runs > 1) out.rollbacks.push(0)
        boots.push(`${position} from ${flag} started ${started}`)
        before = new Set(seen)
        continue
      }
      if (flag === '1') out.flagged++
      if (seen.has(i!) && flag !== '1') {
        out.silent++
        const r = firstRun.get(i!)!
        if (silent.length < 20) silent.push(`event ${i} at ${position} in run ${runs - 1} (${boots[runs - 1]}), first handled at ${firstAt.get(i!)} in run ${r} (${boots[r]})`)
      }
      if (before.has(i!)) out.rollbacks[out.rollbacks.length - 1]!++
      if (!firstRun.has(i!)) {
        firstRun.set(i!, runs - 1)
        firstAt.set(i!, position!)
      }
      seen.add(i!)
    }
    if (silent.length > 0) console.log(`silent redeliveries (runs: ${boots.map((b, k) => `${k} ${b}`).join(', ')}):\n${silent.join('\n')}`)
    for (let i = 0; i < N; i++) if (!seen.has(String(i))) out.lost++
    console.log(`power cuts, ${durability}, start ${start}: ${JSON.stringify(out)}, ${all.length} handler calls`)
    return out
  }

  it('the old process-crash durability, start "new": events are skipped after a cut (the failure of issue 8)', async () => {
    const o = await run('process-crash', 'new', 1)
    expect(o.lost).toBeGreaterThan(0)
  })

  it('the old process-crash durability, start "all": events handled before a cut come again unflagged', async () => {
    const o = await run('process-crash', 'all', 2)
    expect(o.silent).toBeGreaterThan(0)
  })

  for (const [start, seed] of [['new', 3], ['all', 4]] as const) {
    it(`the default power-loss durability, start "${start}": ${CUTS} power cuts and SIGKILLs at random points lose nothing, flag every redelivery, roll back at most a window`, async () => {
      const o = await run('power-loss', start, seed, true)
      expect({ lost: o.lost, silent: o.silent }).toEqual({ lost: 0, silent: 0 })
      expect(o.rollbacks.length).toBe(CUTS)
      for (const r of o.rollbacks) expect(r).toBeLessThanOrEqual(WINDOW)
      expect(o.flagged).toBeGreaterThanOrEqual(o.rollbacks.reduce((a, b) => a + b, 0))
    })
  }

  it('[CLI-POS-5] a reservation comes before the handler, covers the next window positions, and is renewed after positionSyncMs', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    // a memory store that records each reservation and what the handler had seen by then
    const handled: number[] = []
    const reservations: Array<{ upTo: number, handledBefore: number }> = []
    const store = Object.assign(new MemoryPositionStore(), {
      reserve (_key: string, upTo: number): void { reservations.push({ upTo, handledBefore: handled.length }) }
    })
    const clock = new HandSetClock()
    const client = h.client(broker.url, 'alice', 'app', { positions: store, clock, window: 100 })
    const sub = await client.subscribe('readings', { start: 'new' }, (e) => { handled.push(e.position) })
    // [CLI-START-1] the first position, reserved before subscribe() resolved
    expect(reservations).toEqual([{ upTo: sub.position, handledBefore: 0 }])
    const head = sub.position
    const raise = async (i: number): Promise<void> => {
      await svc.raise('readings', { i })
      await waitFor(() => handled.length === i + 1, `event ${i} handled`)
    }
    await raise(0)
    expect(reservations.slice(1)).toEqual([{ upTo: handled[0]! + 99, handledBefore: 0 }])
    await raise(1) // within the reservation, and no time passed: no durable write
    expect(reservations.length).toBe(2)
    clock.advance(1000)
    await raise(2) // positionSyncMs passed: reserved again before its handler
    expect(reservations.slice(2)).toEqual([{ upTo: handled[2]! + 99, handledBefore: 2 }])
    expect(handled[0]).toBeGreaterThan(head)
    expect(() => h?.client(broker.url, 'alice', 'bad', { positionSyncMs: -1 })).toThrow(ConfigError)
  })
})

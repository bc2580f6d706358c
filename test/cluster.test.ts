/**
 * Several brokers on one PostgreSQL ([CLUSTER-*], [PG-*]), with real broker processes (`herald
 * broker --store postgres://...`), a real throwaway PostgreSQL (test/support/postgres.ts) and
 * real endpoint processes killed with SIGKILL:
 * 1. an event stored through broker A reaches a caught-up client on broker B live, and a client that
 *    is behind reads it from the store;
 * 2. 3 brokers SIGKILLed at random while a service and two clients (one transactional) move between
 *    them: every raised event exactly once to the transactional client, no unflagged duplicate to
 *    the other, its positions never go back;
 * 3. PostgreSQL stopped (immediate) mid-stream: no ACK while it is away, /readyz says so, and after
 *    it is back everything arrives exactly once;
 * 4. keyed replacing events through two brokers ([PG-KEY-1]), and consumer groups refused ([PG-GROUP-1]).
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import type { HeraldEvent } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { freePort } from './support/ports.js'
import { startPostgres, type PostgresCluster } from './support/postgres.js'
import { startBrokerProcess, startFixture, writeTestSite, type Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'

/** Events of the crash test (20,000 as the issue asks). */
const N = 20_000

describe('brokers sharing one PostgreSQL', { timeout: 420_000 }, () => {
  let h: Harness | null = null
  let pg: PostgresCluster | null = null
  const procs: Proc[] = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill()
    await h?.close()
    h = null
    await pg?.remove()
    pg = null
  })

  async function broker (site: string, name: string, port: number, url: string, extra: string[] = []): Promise<{ proc: Proc, url: string }> {
    const b = await startBrokerProcess(site, join(h!.dir, name), port, ['--store', url, ...extra])
    procs.push(b.proc)
    return b
  }

  it('[CLUSTER-FEED-1] an event stored through broker A reaches a caught-up client on broker B live; a client behind reads it from the store', async () => {
    h = await Harness.create()
    pg = await startPostgres()
    const site = await writeTestSite(h.dir)
    const a = await broker(site, 'a', 0, pg.url())
    const b = await broker(site, 'b', 0, pg.url())
    const got: HeraldEvent[] = []
    const client = h.client(b.url, 'alice', 'app')
    await client.subscribe('readings', {}, (e) => { got.push(e) })
    const svc = await h.service(a.url, 'svc-a')
    for (let i = 0; i < 500; i++) await svc.raise('readings', { i })
    await waitFor(() => got.length >= 500, '500 events at the client on B', 60_000)
    expect(got.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: 500 }, (_, i) => i))
    expect(new Set(got.map((e) => e.id)).size).toBe(500)
    // a client that starts later on B reads everything from the store, in the same order
    const late: HeraldEvent[] = []
    const c2 = h.client(b.url, 'alice', 'late')
    await c2.subscribe('readings', { start: 'all' }, (e) => { late.push(e) })
    await waitFor(() => late.length >= 500, '500 events at the late client', 60_000)
    expect(late.map((e) => e.position)).toEqual(got.map((e) => e.position))
  })

  it('[PG-KEY-1] keyed events through broker A, read on broker B: a last value per key, a key filter, the key limit across brokers; [PG-GROUP-1] groups refused, typed', async () => {
    h = await Harness.create()
    pg = await startPostgres()
    const site = await writeTestSite(h.dir)
    const a = await broker(site, 'a', 0, pg.url())
    const b = await broker(site, 'b', 0, pg.url())
    const seen = (events: HeraldEvent[]): string[] => events.map((e) => `${e.key ?? '-'}=${e.isNull ? 'null' : String((e.payload as { c: number }).c)}`)
    const onlyT2: HeraldEvent[] = []
    await h.client(b.url, 'alice', 'only-t2').subscribe('thermostat', { start: 'all', keys: ['t2'] }, (e) => { onlyT2.push(e) })
    const svcA = await h.service(a.url, 'svc-a')
    await svcA.raise('thermostat', { device: 't1', c: 20 })
    await svcA.raise('thermostat', { device: 't2', c: 21 })
    await svcA.raise('thermostat', { device: 't1', c: 22 })
    await svcA.raise('thermostat', { device: 't3', c: 23 })
    await svcA.raiseNull('thermostat', { key: 't3' })
    await svcA.drained()
    // the same service through broker B (another instance): a fourth key is past maxKeys 3, so it
    // takes the place of t3, whose stored instance is null; a fifth is refused
    const rejected: string[] = []
    const svcB = await h.service(b.url, 'svc-a', { memoryOnly: true })
    svcB.on('rejected', (r) => { rejected.push(r.error.code) })
    await svcB.raise('thermostat', { device: 't4', c: 24 })
    await svcB.raise('thermostat', { device: 't5', c: 25 })
    await svcB.drained()
    await waitFor(() => rejected.length === 1, 'the KEY_LIMIT rejection', 30_000)
    expect(rejected).toEqual(['KEY_LIMIT'])
    const latest: HeraldEvent[] = []
    await h.client(b.url, 'alice', 'latest').subscribe('thermostat', { start: 'latest' }, (e) => { latest.push(e) })
    await waitFor(() => latest.length >= 3, 'the latest per key', 30_000)
    expect(seen(latest)).toEqual(['t2=21', 't1=22', 't4=24'])
    await waitFor(() => onlyT2.length >= 1, 'the t2 event', 30_000)
    expect(seen(onlyT2)).toEqual(['t2=21'])
    // [PG-GROUP-1] a consumer group on a PostgreSQL broker: refused with a typed error
    const err = await h.client(a.url, 'alice', 'member').subscribe('readings', { group: 'billing' }, () => {}).catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('INVALID_ARGUMENT')
    expect((err as Error).message).toMatch(/PG-GROUP-1/)
  })

  it('[CLUSTER-INGEST-1] plain-MQTT raises of one service through two brokers at once: every PUBACKed event stored, none counted a duplicate', async () => {
    h = await Harness.create()
    pg = await startPostgres()
    const site = await writeTestSite(h.dir)
    const a = await broker(site, 'a', 0, pg.url())
    const b = await broker(site, 'b', 0, pg.url())
    const got: HeraldEvent[] = []
    const client = h.client(a.url, 'alice', 'app')
    await client.subscribe('readings', {}, (e) => { got.push(e) })
    const devices = await Promise.all([a.url, b.url].map(async (url, i) => {
      const c = mqtt.connect(url, { clientId: `dev-${i}`, username: 'svc-a', password: SECRETS['svc-a'], protocolVersion: 4, reconnectPeriod: 0 })
      await new Promise<void>((resolve, reject) => { c.once('connect', () => { resolve() }); c.once('error', reject) })
      return c
    }))
    try {
      const publishes: Array<Promise<void>> = []
      for (let i = 0; i < 200; i++) {
        const c = devices[i % 2]!
        publishes.push(new Promise((resolve, reject) => { c.publish('herald/v1/raise/readings', JSON.stringify({ n: i }), { qos: 1 }, (err) => { if (err !== undefined && err !== null) reject(err); else resolve() }) }))
      }
      await Promise.all(publishes)
      await waitFor(() => got.length >= 200, '200 events at the client', 60_000)
      expect(got.map((e) => (e.payload as { n: number }).n).sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i))
      expect(new Set(got.map((e) => e.id)).size).toBe(200)
    } finally {
      for (const c of devices) await c.endAsync()
    }
  })

  it(`[CLUSTER-DEDUP-1] 3 brokers SIGKILLed at random during ${N} events: exactly once to the transactional client, no unflagged duplicate to the other, positions never go back`, async () => {
    h = await Harness.create()
    pg = await startPostgres()
    const site = await writeTestSite(h.dir)
    const ports = [await freePort(), await freePort(), await freePort()]
    const urls = ports.map((p) => `mqtt://127.0.0.1:${p}`)
    const brokers: Array<{ proc: Proc, url: string }> = []
    for (let i = 0; i < 3; i++) brokers.push(await broker(site, `b${i}`, ports[i]!, pg.url()))
    const rotate = (i: number): { url: string, moreUrls: string[] } => ({ url: urls[i]!, moreUrls: [urls[(i + 1) % 3]!, urls[(i + 2) % 3]!] })

    const txDb = join(h.dir, 'tx.db')
    const tx = startFixture('client-proc.mjs', { ...rotate(1), user: 'alice', password: SECRETS.alice, clientName: 'tx', event: 'readings', mode: 'transactional', db: txDb, expect: N })
    procs.push(tx)
    const log = join(h.dir, 'default.log')
    const plain = startFixture('client-proc.mjs', { ...rotate(2), user: 'alice', password: SECRETS.alice, clientName: 'plain', event: 'readings', mode: 'default', db: join(h.dir, 'plain.db'), log })
    procs.push(plain)
    await tx.waitLine((l) => l === 'subscribed')
    await plain.waitLine((l) => l === 'subscribed')
    const svc = startFixture('service-proc.mjs', { ...rotate(0), serviceId: 'svc-a', secret: SECRETS['svc-a'], db: join(h.dir, 'svc.db'), from: 0, count: N, event: 'readings' })
    procs.push(svc)

    const total = (): number => Number(tx.lines.filter((l) => l.startsWith('total ')).pop()?.slice(6) ?? 0)
    let kills = 0
    let seed = 12345
    const random = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 }
    // 5 kills of a broker picked at random, at points of the stream (a jittered sixth of it each)
    for (let k = 1; k <= 5; k++) {
      const at = Math.floor((k + random() * 0.5 - 0.25) * N / 6)
      await waitFor(() => total() >= at, `${at} effects before kill ${k}`, 300_000, 5)
      const i = Math.floor(random() * 3)
      await brokers[i]!.proc.kill()
      kills++
      await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 500)))
      brokers[i] = await broker(site, `b${i}`, ports[i]!, pg.url())
    }
    await svc.waitLine((l) => l === 'done', 300_000)
    await waitFor(() => total() >= N, `${N} effects at the transactional client`, 300_000).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; got ${total()}; stderr: ${tx.stderr.slice(-2000)}`)
    })
    const distinct = (): number => existsSync(log) ? new Set(readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ')[0])).size : 0
    await waitFor(() => distinct() >= N, `${N} events at the default client`, 300_000)
    await tx.kill()
    await plain.kill()
    expect(kills).toBe(5)

    const d = new Database(txDb, { readonly: true })
    const rows = d.prepare('SELECT id, COUNT(*) AS c FROM effects GROUP BY id').all() as Array<{ id: string, c: number }>
    d.close()
    expect(rows.length).toBe(N)
    expect(rows.filter((r) => r.c !== 1)).toEqual([])

    const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' '))
    const seen = new Set<string>()
    const unflaggedDuplicates: string[] = []
    let highest = 0
    const wentBack: string[] = []
    for (const [id, position, redelivered] of lines) {
      if (seen.has(id!) && redelivered !== '1') unflaggedDuplicates.push(id!)
      seen.add(id!)
      // [CLUSTER-ORDER-1] positions are the database's: whichever broker delivers, they only go up
      if (redelivered !== '1' && Number(position) <= highest) wentBack.push(`${id!}@${position!}`)
      highest = Math.max(highest, Number(position))
    }
    expect(seen.size).toBe(N)
    expect(unflaggedDuplicates).toEqual([])
    expect(wentBack).toEqual([])
  })

  it('[PG-ACK-1] PostgreSQL stopped mid-stream: no ACK while it is away, /readyz says why, then everything arrives exactly once', async () => {
    h = await Harness.create()
    pg = await startPostgres()
    const site = await writeTestSite(h.dir)
    const metricsPort = await freePort()
    const a = await broker(site, 'a', 0, pg.url(), ['--metrics-port', String(metricsPort)])
    const b = await broker(site, 'b', 0, pg.url())
    const got: HeraldEvent[] = []
    const client = h.client(b.url, 'alice', 'app', { moreUrls: [a.url] })
    await client.subscribe('readings', {}, (e) => { got.push(e) })
    const svc = await h.service(a.url, 'svc-a', { moreUrls: [b.url] })
    const raising = (async () => {
      for (let i = 0; i < 3000; i++) {
        await svc.raise('readings', { i })
        if (i % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 5))
      }
    })()
    await waitFor(() => got.length >= 1000, '1000 events before the stop', 60_000)
    await pg.stop('immediate')
    const stoppedAt = got.length
    // give the brokers time to find out; then nothing is acknowledged while it is away
    await waitFor(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 503, '/readyz not ready', 30_000, 200)
    const body = await (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).text()
    expect(body).toMatch(/PostgreSQL|commit|connect/i)
    const ackedAt = svc.status.lastAckAt
    const backlog = svc.status.backlog
    await new Promise((resolve) => setTimeout(resolve, 2000))
    expect(svc.status.lastAckAt).toBe(ackedAt)
    expect(svc.status.backlog).toBeGreaterThanOrEqual(backlog)
    expect(got.length).toBeLessThanOrEqual(stoppedAt + 50) // at most what was committed before the stop and in flight
    await pg.start()
    await raising
    await svc.drained()
    await waitFor(() => got.length >= 3000, '3000 events after the restart', 120_000)
    await waitFor(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200, '/readyz ready again', 30_000, 200)
    expect(got.map((e) => (e.payload as { i: number }).i)).toEqual(Array.from({ length: 3000 }, (_, i) => i))
    expect(new Set(got.map((e) => e.id)).size).toBe(3000)
  })
})

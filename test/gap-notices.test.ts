/**
 * Gap notices ([CLI-GAP-1] .. [CLI-GAP-4]) end to end: a real broker process (the `herald broker`
 * CLI), `herald tail` processes as the client that goes away and comes back, and a client endpoint
 * whose handler is slow. Events removed at the broker before a subscription was sent them (pushed out
 * past maxQueueSize, expired) are told once, before the next event, with how many and why.
 */
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import { ClientEndpoint, type GapInfo } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { eventsOfService } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { parseSite } from '@herald/node-runtime'
import { Harness } from './support/harness.js'
import { Proc, startBrokerProcess } from './support/processes.js'
import { SECRETS, TEST_SITE_DOC } from './support/site.js'
import { freePort } from './support/ports.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

/** The test site with two events of this test's: a queue of 10, and a short lifetime. */
const SITE_DOC = {
  ...TEST_SITE_DOC,
  events: [
    ...TEST_SITE_DOC.events,
    { name: 'gap-queue', category: 'queueing', lifetime: '1d', maxQueueSize: 10, access: 'authenticated' },
    { name: 'gap-short', category: 'queueing', lifetime: '1s', maxQueueSize: 1000, access: 'authenticated' }
  ],
  services: TEST_SITE_DOC.services.map((s) => s.id === 'svc-a' ? { ...s, events: [...s.events, 'gap-queue', 'gap-short'] } : s)
}

interface GapLine { gap: Omit<GapInfo, 'key'> }
interface EventLine { event: string, position: number, payload: { i: number }, redelivered: boolean }

describe('gap notices, with a broker process', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  async function setup (): Promise<{ url: string, service: ServiceEndpoint, metrics: () => Promise<string> }> {
    h = await Harness.create()
    const sitePath = join(h.dir, 'gap-site.json')
    await writeFile(sitePath, JSON.stringify(SITE_DOC))
    const metricsPort = await freePort()
    const { proc, url } = await startBrokerProcess(sitePath, join(h.dir, 'broker'), 0, ['--metrics-port', String(metricsPort)])
    h.onClose(() => proc.kill())
    const site = await parseSite(SITE_DOC)
    const service = new ServiceEndpoint({ url, serviceId: 'svc-a', secret: SECRETS['svc-a'], events: eventsOfService(site, 'svc-a'), reconnectInitialMs: 20, reconnectMaxMs: 200 })
    h.onClose(() => service.close())
    service.start()
    return { url, service, metrics: async () => await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text() }
  }

  /** `herald tail <event> --json` as alice, positions in one file; resolves with its lines when it exits. */
  async function tailRun (url: string, event: string, count: number): Promise<Array<GapLine | EventLine>> {
    const args = [event, '--url', url, '--user', 'alice', '--client', 'away', '--positions', join(h.dir, 'tail-positions.db'), '--json', '--no-summary', '--count', String(count)]
    const child = spawn(process.execPath, [CLI, 'tail', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', HERALD_PASSWORD: SECRETS.alice } })
    const p = new Proc(child, `herald tail ${args.join(' ')}`)
    h.onClose(() => p.kill())
    const code = await p.exited
    await p.drained
    expect(code, p.stderr).toBe(0)
    return p.lines.map((l) => JSON.parse(l) as GapLine | EventLine)
  }

  async function raise (service: ServiceEndpoint, event: string, from: number, to: number): Promise<void> {
    for (let i = from; i <= to; i++) await service.raise(event, { i })
    await service.drained()
  }

  it('a client away while a queue of 10 got 50 events is told of the 40 pushed out, once, before the 10 stored; none when nothing was missed', async () => {
    const { url, service, metrics } = await setup()
    await raise(service, 'gap-queue', 0, 0)
    const first = await tailRun(url, 'gap-queue', 1)
    expect(first).toHaveLength(1)
    expect((first[0] as EventLine).payload.i).toBe(0)
    const seen = (first[0] as EventLine).position

    await raise(service, 'gap-queue', 1, 50)
    const back = await tailRun(url, 'gap-queue', 10)
    expect(back).toHaveLength(11)
    const notice = back[0] as GapLine
    const events = back.slice(1) as EventLine[]
    expect(events.map((e) => e.payload.i)).toEqual(Array.from({ length: 10 }, (_, k) => 41 + k))
    expect(events.every((e) => !e.redelivered)).toBe(true)
    expect(notice.gap).toEqual({ event: 'gap-queue', services: ['svc-a'], missed: 40, exact: true, pushedOut: 40, expired: 0, after: seen, upTo: (events[0] as EventLine).position - 1 })

    // back again with nothing missed: no notice, only the new events
    await raise(service, 'gap-queue', 51, 53)
    const again = await tailRun(url, 'gap-queue', 3)
    expect(again.map((l) => 'gap' in l ? 'gap' : l.payload.i)).toEqual([51, 52, 53])
    // [CLI-GAP-4] counted at the broker
    const text = await metrics()
    expect(text).toContain('herald_subscription_gaps_total{event="gap-queue"} 1')
    expect(text).toContain('herald_subscription_gap_events_total{event="gap-queue"} 40')
  })

  it('a client away while events expired is told of them as expired, before the next event', async () => {
    const { url, service, metrics } = await setup()
    // the tail subscribes first, so event 0 reaches it within its 1 s lifetime however slow the
    // process is to start
    const first = tailRun(url, 'gap-short', 1)
    await waitFor(async () => /herald_subscriptions\{event="gap-short"\} 1/.test(await metrics()), 'the tail subscribed', 30_000)
    await raise(service, 'gap-short', 0, 0)
    expect(await first).toHaveLength(1)
    await raise(service, 'gap-short', 1, 3)
    // a lifetime of 1 s from the raise: wait until it has run out for the last of them
    const raisedBy = Date.now()
    await waitFor(() => Date.now() > raisedBy + 1200, 'the lifetime of the raised events to run out')
    await waitFor(async () => !/herald_subscriptions\{event="gap-short"\} [1-9]/.test(await metrics()), 'the first tail gone', 30_000)
    const again = tailRun(url, 'gap-short', 1)
    await waitFor(async () => /herald_subscriptions\{event="gap-short"\} 1/.test(await metrics()), 'the tail subscribed again', 30_000)
    await raise(service, 'gap-short', 4, 4)
    const back = await again
    expect(back).toHaveLength(2)
    expect(back[0]).toMatchObject({ gap: { event: 'gap-short', services: ['svc-a'], missed: 3, exact: true, pushedOut: 0, expired: 3 } })
    expect((back[1] as EventLine).payload.i).toBe(4)
  })

  it('a live subscription whose unsent events are pushed out while its handler is slow is told before the next event', async () => {
    const { url, service } = await setup()
    const client = new ClientEndpoint({ url, clientName: 'slow', user: 'alice', password: SECRETS.alice, reconnectInitialMs: 20, reconnectMaxMs: 200 })
    h.onClose(() => client.close())
    client.start()
    const seen: Array<string | number> = []
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => { release = resolve })
    const gaps: GapInfo[] = []
    client.on('gap', (g) => { gaps.push(g); seen.push('gap') })
    const sub = await client.subscribe('gap-queue', { start: 'new', window: 1 }, async (e) => {
      const i = (e.payload as { i: number }).i
      if (i === 0) await gate
      seen.push(i)
    })
    await raise(service, 'gap-queue', 0, 30)
    // the handler holds event 0; 1..30 wait at the broker, whose queue keeps the newest 10
    release()
    await waitFor(() => sub.delivered === 11, 'event 0 and the 10 stored ones handled', 60_000)
    expect(seen).toEqual([0, 'gap', ...Array.from({ length: 10 }, (_, k) => 21 + k)])
    expect(gaps).toHaveLength(1)
    expect(gaps[0]).toMatchObject({ key: 'gap-queue', event: 'gap-queue', missed: 20, exact: true, pushedOut: 20, expired: 0 })
    expect(sub.gaps).toBe(1)
    expect(sub.missed).toBe(20)
  })
})

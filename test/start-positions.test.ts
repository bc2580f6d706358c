/**
 * Where a subscription without a position starts ([CLI-START-1] .. [CLI-START-3]), end to end: a
 * real broker process, `herald tail --start ...` processes, and a client endpoint starting at a Date.
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { eventsOfService } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { Proc, startBrokerProcess, writeTestSite } from './support/processes.js'
import { SECRETS, testSite } from './support/site.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

interface EventLine { position: number, payload: { i: number } }

describe('start positions, with a broker process', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  /** `herald tail readings --json --start <start>` as alice, positions in memory. */
  function tail (url: string, start: string, count: number): Proc {
    const args = ['readings', '--url', url, '--user', 'alice', '--json', '--no-summary', '--start', start, '--count', String(count)]
    const child = spawn(process.execPath, [CLI, 'tail', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', HERALD_PASSWORD: SECRETS.alice } })
    const p = new Proc(child, `herald tail ${args.join(' ')}`)
    h.onClose(() => p.kill())
    return p
  }

  async function shown (p: Proc): Promise<number[]> {
    const code = await p.exited
    await p.drained
    expect(code, p.stderr).toBe(0)
    return p.lines.map((l) => (JSON.parse(l) as EventLine).payload.i)
  }

  it('starts at everything, a position, a time, and a time or position past the newest (only new events)', async () => {
    h = await Harness.create()
    const { proc, url } = await startBrokerProcess(await writeTestSite(h.dir), join(h.dir, 'broker'), 0)
    h.onClose(() => proc.kill())
    const service = new ServiceEndpoint({ url, serviceId: 'svc-a', secret: SECRETS['svc-a'], events: eventsOfService(await testSite(), 'svc-a'), reconnectInitialMs: 20, reconnectMaxMs: 200 })
    h.onClose(() => service.close())
    service.start()
    const raise = async (from: number, to: number): Promise<void> => {
      for (let i = from; i <= to; i++) await service.raise('readings', { i })
      await service.drained()
    }
    await raise(0, 4)
    // every event so far was received by the broker at or before `boundary`, every later one after it
    const boundary = Date.now() + 1
    await waitFor(() => Date.now() > boundary, 'the clock to pass the boundary')
    await raise(5, 9)

    const all = tail(url, 'all', 10)
    expect(await shown(all)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    const positions = all.lines.map((l) => (JSON.parse(l) as EventLine).position)

    // [CLI-START-2] a position: the event stored there first
    expect(await shown(tail(url, String(positions[7]), 3))).toEqual([7, 8, 9])
    // [CLI-START-3] a time: the first event received at or after it
    expect(await shown(tail(url, new Date(boundary).toISOString(), 5))).toEqual([5, 6, 7, 8, 9])

    // past the newest event, by time or by position: only what comes after it
    const later = tail(url, new Date(Date.now() + 60_000).toISOString(), 1)
    const beyond = tail(url, String((positions[9] as number) + 1000), 1)
    await waitFor(() => later.stderr.includes('watching') && beyond.stderr.includes('watching'), 'both tails to subscribe', 60_000)
    await raise(10, 10)
    expect(await shown(later)).toEqual([10])
    expect(await shown(beyond)).toEqual([10])
  })

  it('[CLI-START-4] latest: the newest event of each service, in position order, then new ones', async () => {
    h = await Harness.create()
    const { proc, url } = await startBrokerProcess(await writeTestSite(h.dir), join(h.dir, 'broker'), 0)
    h.onClose(() => proc.kill())
    const site = await testSite()
    const services = (['svc-a', 'svc-b'] as const).map((id) => {
      const s = new ServiceEndpoint({ url, serviceId: id, secret: SECRETS[id], events: eventsOfService(site, id), reconnectInitialMs: 20, reconnectMaxMs: 200 })
      h.onClose(() => s.close())
      return s.start()
    })
    const [a, b] = services as [ServiceEndpoint, ServiceEndpoint]
    for (let i = 0; i <= 4; i++) await a.raise('readings', { i })
    await a.drained()
    for (let i = 100; i <= 102; i++) await b.raise('readings', { i })
    await b.drained()
    await a.raise('readings', { i: 5 })
    await a.drained()
    const p = tail(url, 'latest', 3)
    await waitFor(() => p.stderr.includes('watching'), 'the tail to subscribe', 60_000)
    await b.raise('readings', { i: 103 })
    expect(await shown(p)).toEqual([102, 5, 103])
  })

  it('a client endpoint starts at a Date; its recorded position then wins over any start', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const service = await h.service(broker.url, 'svc-a')
    await service.raise('readings', { i: 0 })
    await service.drained()
    const boundary = Date.now() + 1
    await waitFor(() => Date.now() > boundary, 'the clock to pass the boundary')
    await service.raise('readings', { i: 1 })
    await service.raise('readings', { i: 2 })
    await service.drained()

    const got: number[] = []
    const client = h.client(broker.url, 'alice', 'by-time', { durable: true })
    const sub = await client.subscribe('readings', { start: { time: new Date(boundary) } }, (e) => { got.push((e.payload as { i: number }).i) })
    await waitFor(() => got.length === 2, 'the two events after the boundary')
    expect(got).toEqual([1, 2])
    await sub.unsubscribe()
    await client.close()

    // the same position store: the recorded position is where it resumes, whatever start says
    await service.raise('readings', { i: 3 })
    await service.drained()
    const again: number[] = []
    const client2 = h.client(broker.url, 'alice', 'by-time', { durable: true })
    await client2.subscribe('readings', { start: { position: 1 } }, (e) => { again.push((e.payload as { i: number }).i) })
    await waitFor(() => again.length === 1, 'the event after the recorded position')
    expect(again).toEqual([3])
    await expect(client2.subscribe('temperature', { start: { time: Number.NaN } }, () => {})).rejects.toThrow(/option "start" must be/)
  })
})

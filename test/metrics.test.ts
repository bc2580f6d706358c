/**
 * `/metrics`, `/healthz` and `/readyz` of real processes ([OPS-METRICS-1], [OPS-METRICS-2]): a
 * simulated device -> `herald gateway` -> `herald broker` -> a client, both processes scraped while
 * events flow, and their counters checked against what the client received.
 */
import { spawn } from 'node:child_process'
import { statSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ClientEndpoint, type HeraldEvent } from '@herald/client-endpoint'
import { startSim } from '@herald/firmware-sim'
import { eventsOfService } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { tempDir } from '@herald/node-runtime/testing'
import { deviceChainYaml } from './support/gateway-yaml.js'
import { freePort } from './support/ports.js'
import { Proc, startBrokerProcess, startGatewayProcess, writeTestSite } from './support/processes.js'
import { SECRETS, testSite } from './support/site.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

/** One sample of a Prometheus text exposition: its name, labels and value. */
interface Sample { name: string, labels: Record<string, string>, value: number }

/** Parses the Prometheus text format (the subset prom-client writes). */
function parse (text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    out.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return out
}

/** The sum of the samples of `name` whose labels include `labels`. */
function sum (samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0)
}

async function scrape (base: string): Promise<Sample[]> {
  const res = await fetch(`${base}/metrics`)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
  return parse(await res.text())
}

/** The base URL (`http://host:port`) from a process's "... metrics on <url>/metrics" line. */
async function metricsBase (proc: Proc): Promise<string> {
  const line = await proc.waitLine((l) => / metrics on http:\/\//.test(l))
  return line.slice(line.indexOf('http://')).replace(/\/metrics$/, '')
}

describe('metrics and health endpoints of the broker and the gateway', () => {
  let dir: { path: string, remove: () => Promise<void> }
  const closers: Array<() => Promise<void>> = []

  beforeAll(async () => { dir = await tempDir('herald-metrics-') })
  afterAll(async () => {
    for (const c of closers.reverse()) await c().catch(() => {})
    await dir.remove()
  })

  it('counts what flows: stored and delivered equal what the gateway raised and the client received', async () => {
    const site = await writeTestSite(dir.path)
    const brokerMetricsPort = await freePort()
    const broker = await startBrokerProcess(site, join(dir.path, 'broker'), 0, ['--metrics-port', String(brokerMetricsPort)])
    closers.push(() => broker.proc.kill())
    const brokerBase = await metricsBase(broker.proc)
    expect(brokerBase).toBe(`http://127.0.0.1:${brokerMetricsPort}`)

    // health and the bounds of the listener: only GET on three paths
    expect((await fetch(`${brokerBase}/healthz`)).status).toBe(200)
    const ready = await fetch(`${brokerBase}/readyz`)
    expect([ready.status, await ready.json()]).toEqual([200, { status: 'ready' }])
    expect((await fetch(`${brokerBase}/`)).status).toBe(404)
    expect((await fetch(`${brokerBase}/metrics/x`)).status).toBe(404)
    const post = await fetch(`${brokerBase}/metrics`, { method: 'POST', body: 'x' })
    expect([post.status, post.headers.get('allow')]).toEqual([405, 'GET, HEAD'])

    const sim = await startSim({ devices: [{ model: 'thermostat', count: 2 }], link: { kind: 'tcp', host: '127.0.0.1', basePort: 0 }, rate: 20, seed: 3 })
    let simClosed = false
    closers.push(async () => { if (!simClosed) await sim.close() })
    // the gateway takes its metrics port from its configuration file
    const gatewayMetricsPort = await freePort()
    const configFile = join(dir.path, 'gateway.yaml')
    await writeFile(configFile, `${deviceChainYaml(broker.url, join(dir.path, 'gateway'), sim.devices.map((d) => d.url), '500ms')}metrics:\n  port: ${gatewayMetricsPort}\n`)
    const gateway = await startGatewayProcess(configFile)
    closers.push(() => gateway.kill())
    const gatewayBase = await metricsBase(gateway)
    expect(gatewayBase).toBe(`http://127.0.0.1:${gatewayMetricsPort}`)

    const received: HeraldEvent[] = []
    const client = new ClientEndpoint({ url: broker.url, clientName: 'metrics-test', user: 'alice', password: SECRETS.alice, reconnectInitialMs: 20, reconnectMaxMs: 200 })
    closers.push(() => client.close())
    client.start()
    for (const event of ['readings', 'alarms']) await client.subscribe(event, { start: 'all' }, (e) => { received.push(e) })

    // while events flow: both processes answer, and the counters move
    await waitFor(() => received.length >= 20, 'the first events at the client', 60_000)
    const during = await scrape(brokerBase)
    expect(sum(during, 'herald_events_stored_total', { event: 'readings' })).toBeGreaterThan(0)
    expect(sum(during, 'herald_connections', { kind: 'service' })).toBe(1)
    expect(sum(during, 'herald_connections', { kind: 'client' })).toBe(1)
    expect(sum(during, 'herald_connections', { kind: 'guest' })).toBe(0)
    expect(sum(during, 'herald_subscriptions', { event: 'readings' })).toBe(1)
    expect(sum(during, 'herald_store_commit_duration_seconds_count')).toBeGreaterThan(0)
    expect(sum(during, 'herald_store_sync_duration_seconds_count')).toBe(sum(during, 'herald_store_commit_duration_seconds_count'))
    const gwDuring = await scrape(gatewayBase)
    for (const d of sim.devices) {
      const line = d.url
      expect(sum(gwDuring, 'herald_gateway_device_line_up', { line })).toBe(1)
      expect(sum(gwDuring, 'herald_gateway_frames_total', { line })).toBeGreaterThan(0)
    }
    expect(sum(gwDuring, 'herald_gateway_durable')).toBe(1)
    expect(sum(gwDuring, 'herald_gateway_broker_connected')).toBe(1)
    expect((await fetch(`${gatewayBase}/healthz`)).status).toBe(200)
    expect((await fetch(`${gatewayBase}/readyz`)).status).toBe(200)
    expect((await fetch(`${gatewayBase}/status`)).status).toBe(404)
    expect((await fetch(`${gatewayBase}/metrics`, { method: 'DELETE' })).status).toBe(405)

    // the devices stop; once the gateway's backlog is empty and the client has everything, the counters agree
    await sim.close()
    simClosed = true
    let gw: Sample[] = []
    let b: Sample[] = []
    await waitFor(async () => {
      gw = await scrape(gatewayBase)
      b = await scrape(brokerBase)
      const stored = sum(b, 'herald_events_stored_total')
      return sum(gw, 'herald_gateway_backlog_events') === 0 && stored > 0 && received.length === stored &&
        sum(gw, 'herald_gateway_events_raised_total') === stored && sum(b, 'herald_events_delivered_total') === stored
    }, 'the gateway\'s backlog empty and every stored event at the client', 60_000, 100)
    const byEvent = (name: string): number => received.filter((e) => e.name === name).length
    for (const event of ['readings', 'alarms']) {
      expect(sum(b, 'herald_events_stored_total', { event })).toBe(byEvent(event))
      expect(sum(b, 'herald_events_delivered_total', { event })).toBe(byEvent(event))
      expect(sum(b, 'herald_stored_events', { event })).toBe(byEvent(event))
    }
    expect(sum(gw, 'herald_gateway_events_raised_total')).toBe(received.length)
    expect(sum(gw, 'herald_gateway_backlog_bytes')).toBe(0)
    expect(sum(gw, 'herald_gateway_frames_refused_total', { reason: 'corrupt' })).toBe(0)
    expect(sum(b, 'herald_events_refused_total')).toBe(0)
    expect(sum(b, 'herald_store_head_position')).toBe(received.length)
    // the client is caught up: no lag
    expect(sum(b, 'herald_subscription_max_lag_positions', { event: 'readings' })).toBe(0)

    // a wrong password counts as an authentication failure, and the refused login as no connection
    expect(sum(b, 'herald_authentication_failures_total')).toBe(0)
    const intruder = new ClientEndpoint({ url: broker.url, clientName: 'intruder', user: 'bob', password: 'not-bobs-password', reconnectInitialMs: 200, reconnectMaxMs: 1000 })
    intruder.on('error', () => {})
    closers.push(() => intruder.close())
    intruder.start()
    await waitFor(async () => sum(await scrape(brokerBase), 'herald_authentication_failures_total', { reason: 'bad_credentials' }) >= 1, 'a counted authentication failure', 30_000, 100)
    await intruder.close()
    expect(sum(await scrape(brokerBase), 'herald_connections', { kind: 'client' })).toBe(1)
  })

  it('/readyz is 503 with the reason once the store cannot commit (files limited to 2 MiB), /healthz still 200', async () => {
    const site = await writeTestSite(dir.path)
    // ulimit -f makes writes past 2 MiB fail (EFBIG; SIGXFSZ ignored), as a full disk would
    const child = spawn('sh', ['-c', `trap '' XFSZ; ulimit -f 4096; exec "$0" "$@"`, process.execPath, CLI, 'broker', '--site', site, '--data', join(dir.path, 'small-broker'),
      '--port', '0', '--metrics-port', '0', '--log-level', 'fatal'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const proc = new Proc(child, 'broker')
    closers.push(() => proc.kill())
    const url = (await proc.waitLine((l) => l.startsWith('herald broker listening on '))).slice('herald broker listening on '.length)
    const base = await metricsBase(proc)
    expect((await fetch(`${base}/readyz`)).status).toBe(200)

    const svc = new ServiceEndpoint({ url, serviceId: 'svc-a', secret: SECRETS['svc-a'], events: eventsOfService(await testSite(), 'svc-a'), reconnectInitialMs: 50, reconnectMaxMs: 500 })
    svc.on('error', () => {})
    closers.push(() => svc.close())
    svc.start()
    const filler = 'x'.repeat(50_000)
    let raised = 0
    let ready: Response | null = null
    await waitFor(async () => {
      // raise about 500 KiB more, then look
      for (let i = 0; i < 10; i++) await svc.raise('readings', { i: raised++, filler })
      ready = await fetch(`${base}/readyz`)
      return ready.status === 503
    }, 'a failed commit at the broker', 60_000, 50)
    expect(await ready!.json()).toEqual({ status: 'not ready', reason: expect.stringMatching(/^the last commit failed: /) as unknown })
    expect((await fetch(`${base}/healthz`)).status).toBe(200)
    // nothing more was stored than fits: the store's counters still answer
    const m = await scrape(base)
    expect(sum(m, 'herald_events_stored_total', { event: 'readings' })).toBeLessThan(raised)
  })

  it('a busy --metrics-port stops the broker before it opens the store, with one line naming the flag, exit code 2', async () => {
    const site = await writeTestSite(dir.path)
    const holder = createServer()
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
    closers.push(() => new Promise((resolve) => { holder.close(() => { resolve() }) }))
    const busy = (holder.address() as { port: number }).port
    const data = join(dir.path, 'busy-metrics')
    const child = spawn(process.execPath, [CLI, 'broker', '--site', site, '--data', data, '--port', '0', '--metrics-port', String(busy), '--log-level', 'fatal'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const proc = new Proc(child, 'broker')
    closers.push(() => proc.kill())
    expect(await proc.exited).toBe(2)
    expect(proc.stderr).toBe(`herald: metrics port ${busy} on 127.0.0.1 is in use: choose another with --metrics-port [ADDRESS_IN_USE]\n`)
    // refused before the store was opened: its file is still the empty one the lock made private
    expect(statSync(join(data, 'events.db')).size).toBe(0)
    const again = await startBrokerProcess(site, data, 0, ['--metrics-port', '0'])
    closers.push(() => again.proc.kill())
    expect((await fetch(`${await metricsBase(again.proc)}/readyz`)).status).toBe(200)
  })
})

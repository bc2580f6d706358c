// One measured run: a broker, subscriber processes and publisher processes, started, released
// together and timed. Used by every scenario, for the references and for Herald alike.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { nodeChild, killEach } from './proc.mjs'
import { EVENT, SERVICE_SECRET, USER, USER_PASSWORD, proc, startHerald, writeSite } from './brokers.mjs'

function sum (list) {
  return list.reduce((a, b) => a + (b ?? 0), 0)
}

/** Splits `n` items into at most `parts` nearly equal groups (no empty ones). */
export function split (n, parts) {
  const p = Math.max(1, Math.min(parts, n))
  return Array.from({ length: p }, (_, i) => Math.floor(n / p) + (i < n % p ? 1 : 0))
}

/** Merges latency summaries of several processes conservatively: the worst p50 and p99. */
function mergeLatency (list) {
  const ok = list.filter((l) => l !== undefined && l !== null && l.n > 0)
  if (ok.length === 0) return null
  return { n: ok.reduce((s, l) => s + l.n, 0), p50: Math.max(...ok.map((l) => l.p50)), p99: Math.max(...ok.map((l) => l.p99)), max: Math.max(...ok.map((l) => l.max)) }
}

/**
 * A reference run on an MQTT broker: `subClients` subscribers in `subProcs` processes, each
 * expecting every message; `pubClients` publishers in `pubProcs` processes, `count` messages each.
 */
export async function mqttRun (broker, { pubClients, pubProcs, count, inflight, rate = 0, subClients, subProcs, deadline }) {
  const children = []
  try {
    const topic = 'bench/t'
    const expect = pubClients * count
    const subs = split(subClients, subProcs).map((clients, i) => nodeChild(`mqtt-sub ${i}`, proc('mqtt-sub.mjs'), { url: broker.url, topic, clients, expect }))
    children.push(...subs)
    await Promise.all(subs.map((c) => c.waitFor('ready', 'subscribers ready', deadline)))
    const pubs = split(pubClients, pubProcs).map((clients, i) => nodeChild(`mqtt-pub ${i}`, proc('mqtt-pub.mjs'), { url: broker.url, topic, clients, count, inflight, rate }))
    children.push(...pubs)
    await Promise.all(pubs.map((c) => c.waitFor('ready', 'publishers connected', deadline)))
    for (const p of pubs) p.send('go')
    const pubResults = (await Promise.all(pubs.map((c) => c.waitFor('result', 'all PUBACKs', deadline)))).map((m) => m.result)
    const subResults = (await Promise.all(subs.map((c) => c.waitFor('result', `${expect} messages per subscriber`, deadline)))).map((m) => m.result)
    const start = Math.min(...pubResults.map((r) => r.start))
    const end = Math.max(...subResults.map((r) => r.last))
    const deliveries = subResults.reduce((s, r) => s + r.received, 0)
    return { events: expect, deliveries, seconds: (end - start) / 1000, perSecond: deliveries / ((end - start) / 1000), latency: mergeLatency(subResults.map((r) => r.latency)) }
  } finally {
    await killEach(children)
  }
}

/** Where a Herald run keeps its files; removed by `dispose`. */
export async function heraldWorkspace (services) {
  const dir = await mkdtemp(join(tmpdir(), 'herald-bench-'))
  const site = await writeSite(dir, services)
  return { dir, site, dispose: () => rm(dir, { recursive: true, force: true }) }
}

/** Service processes for `services` services (svc-<first>..), files in `dir`. */
export function serviceChildren ({ url, dir, services, procs, first = 0, count, rate = 0, window, maxUnacked, offline = false, nodeArgs = [] }) {
  let next = first
  return split(services, procs).map((n, i) => nodeChild(`herald-service ${i}`, proc('herald-service.mjs'), {
    url,
    services: Array.from({ length: n }, () => {
      const id = next++
      return { serviceId: `svc-${id}`, secret: SERVICE_SECRET, db: join(dir, `gateway-${id}.db`) }
    }),
    event: EVENT,
    count,
    rate,
    window,
    maxUnacked,
    offline
  }, { nodeArgs }))
}

/**
 * Client processes for `clients` client endpoints, positions files in `dir`; `durability` is the
 * SqlitePositionStore mode (undefined: its default, 'power-loss').
 */
export function clientChildren ({ url, dir, clients, procs, expect, guests = false, nodeArgs = [], prefix = 'app', durability, batch, concurrency, handlerWaitMs }) {
  let next = 0
  return split(clients, procs).map((n, i) => nodeChild(`herald-client ${i}`, proc('herald-client.mjs'), {
    url,
    user: guests ? null : USER,
    password: USER_PASSWORD,
    clients: Array.from({ length: n }, () => {
      const id = next++
      return { clientName: `${prefix}-${id}`, positions: join(dir, `positions-${prefix}-${id}.db`) }
    }),
    event: EVENT,
    expect,
    start: 'all',
    durability,
    batch,
    concurrency,
    handlerWaitMs
  }, { nodeArgs }))
}

/**
 * A Herald run: a fresh broker with SQLite defaults, `clients` client endpoints, `services`
 * service endpoints raising `count` events each (client positions in `durability` mode). Throughput
 * counts from the first raise() call to the last handler call.
 */
export async function heraldRun ({ services, serviceProcs, count, rate = 0, window = 5000, maxUnacked = 4000, clients, clientProcs, deadline, nodeArgs = [], durability, plainSubscriber = null, storeUrl = null, brokers = 1 }) {
  const ws = await heraldWorkspace(services)
  const children = []
  let broker = null
  // [CLUSTER-*] with storeUrl: `brokers` brokers on that PostgreSQL; services on the first, clients on the last
  const others = []
  try {
    broker = await startHerald({ site: ws.site, dataDir: join(ws.dir, 'data'), nodeArgs, storeUrl }, deadline)
    for (let i = 1; i < brokers; i++) others.push(await startHerald({ site: ws.site, dataDir: join(ws.dir, `data${i}`), nodeArgs, storeUrl }, deadline))
    const clientBroker = others.length > 0 ? others[others.length - 1] : broker
    const cl = clientChildren({ url: clientBroker.url, dir: ws.dir, clients, procs: clientProcs, expect: services * count, nodeArgs, durability })
    children.push(...cl)
    await Promise.all(cl.map((c) => c.waitFor('ready', 'clients subscribed', deadline)))
    // a plain MQTT client on the read-only view ([PLAIN-VIEW-*]), besides the client endpoints
    const plain = plainSubscriber === null
      ? null
      : nodeChild('plain view subscriber', proc('mqtt-sub.mjs'), { url: broker.url, topic: 'herald/v1/events/#', clients: 1, expect: services * count, username: USER, password: USER_PASSWORD, qos: plainSubscriber.qos, envelope: true, clientIdPrefix: 'bench-plain' })
    if (plain !== null) {
      children.push(plain)
      await plain.waitFor('ready', 'the plain subscriber subscribed', deadline)
    }
    const sv = serviceChildren({ url: broker.url, dir: ws.dir, services, procs: serviceProcs, count, rate, window, maxUnacked, nodeArgs })
    children.push(...sv)
    await Promise.all(sv.map((c) => c.waitFor('ready', 'services online', deadline)))
    const cpu0 = [broker.child.cpu() + sum(others.map((b) => b.child.cpu())), sum(sv.map((c) => c.cpu())), sum(cl.map((c) => c.cpu()))]
    for (const s of sv) s.send('go')
    const raised = (await Promise.all(sv.map((c) => c.waitFor('raised', 'every raise() resolved', deadline)))).map((m) => m.raised)
    const results = (await Promise.all(cl.map((c) => c.waitFor('result', `${services * count} events per client`, deadline)))).map((m) => m.result)
    const plainResult = plain === null ? null : (await plain.waitFor('result', `${services * count} events at the plain subscriber`, deadline)).result
    const cpu1 = [broker.child.cpu() + sum(others.map((b) => b.child.cpu())), sum(sv.map((c) => c.cpu())), sum(cl.map((c) => c.cpu()))]
    const start = Math.min(...raised.map((r) => r.start))
    const end = Math.max(...results.map((r) => r.last))
    const deliveries = results.reduce((s, r) => s + r.received, 0)
    const redelivered = results.reduce((s, r) => s + r.redelivered, 0)
    if (nodeArgs.length > 0) {
      // let profiled children exit normally, so that they write their profiles
      for (const s of sv) s.send('exit')
      await Promise.all([...children.map((c) => c.stop(10_000)), broker.stop()])
    }
    // CPU microseconds per event raised, per side: what each process costs whatever the machine's load
    const perEvent = (i) => Math.round((cpu1[i] - cpu0[i]) * 1000 / (services * count) * 10) / 10
    const cpuPerEvent = { broker: perEvent(0), services: perEvent(1), clients: perEvent(2) }
    const plainView = plainResult === null ? null : { received: plainResult.received, perSecond: plainResult.received / ((plainResult.last - start) / 1000), latency: plainResult.latency }
    return { events: services * count, deliveries, redelivered, cpuPerEvent, seconds: (end - start) / 1000, perSecond: deliveries / ((end - start) / 1000), latency: mergeLatency(results.map((r) => r.latency)), plainView }
  } finally {
    await killEach(children)
    for (const b of others) await b.child.kill()
    if (broker !== null) await broker.child.kill()
    await ws.dispose()
  }
}

/**
 * Plain-MQTT ingest ([PLAIN-INGEST-*]): `publishers` mqtt.js connections with the service's
 * credentials each publish `count` events at QoS 1 to herald/v1/raise/<event>, at most `inflight`
 * unacknowledged; one client endpoint receives them. Throughput counts from the first publish to the
 * last handler call; `acked` from the first publish to the last PUBACK (each one after the commit).
 */
export async function heraldIngestRun ({ publishers = 1, count, inflight = 1000, deadline, nodeArgs = [] }) {
  const ws = await heraldWorkspace(1)
  const children = []
  let broker = null
  try {
    broker = await startHerald({ site: ws.site, dataDir: join(ws.dir, 'data'), nodeArgs }, deadline)
    const cl = clientChildren({ url: broker.url, dir: ws.dir, clients: 1, procs: 1, expect: publishers * count, nodeArgs })
    children.push(...cl)
    await Promise.all(cl.map((c) => c.waitFor('ready', 'clients subscribed', deadline)))
    const pub = nodeChild('plain publisher', proc('mqtt-pub.mjs'), { url: broker.url, topic: `herald/v1/raise/${EVENT}`, clients: publishers, count, inflight, username: 'svc-0', password: SERVICE_SECRET })
    children.push(pub)
    await pub.waitFor('ready', 'the plain publishers connected', deadline)
    const cpu0 = broker.child.cpu()
    pub.send('go')
    const published = (await pub.waitFor('result', 'all PUBACKs', deadline)).result
    const [result] = (await Promise.all(cl.map((c) => c.waitFor('result', `${publishers * count} events at the client`, deadline)))).map((m) => m.result)
    const cpu1 = broker.child.cpu()
    // a profiled broker must exit normally to write its profile
    if (nodeArgs.length > 0) await Promise.all([...children.map((c) => c.stop(10_000)), broker.stop()])
    return {
      events: publishers * count,
      deliveries: result.received,
      seconds: (result.last - published.start) / 1000,
      perSecond: result.received / ((result.last - published.start) / 1000),
      ackedPerSecond: published.sent / ((published.end - published.start) / 1000),
      latency: result.latency,
      cpuPerEvent: { broker: Math.round((cpu1 - cpu0) * 1000 / (publishers * count) * 10) / 10 }
    }
  } finally {
    await killEach(children)
    if (broker !== null) await broker.child.kill()
    await ws.dispose()
  }
}

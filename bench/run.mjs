// The Herald benchmark (issue #4): Herald against Mosquitto and aedes, side by side, in one run.
//
//   npm run bench                         build, then every scenario at full size
//   npm run bench -- --quick              small sizes, for a quick check (targets not judged)
//   npm run bench -- --only s1,s5         some scenarios (s1 .. s11)
//   npm run bench -- --cpu-prof           profile the Herald processes (bench/results/profiles/)
//   npm run bench -- --no-save            do not write bench/results/<date>.json
//
// Everything runs on loopback in separate processes, bounded in time. See docs/performance.md.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem, release, platform } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BenchError, Child, freePort, killEach, nodeChild, nowMs } from './lib/proc.mjs'
import { EVENT, ROOT, SERVICE_SECRET, USER, USER_PASSWORD, findMosquitto, proc, startAedes, startHerald, startMosquitto } from './lib/brokers.mjs'
import { startPostgres } from './lib/postgres.mjs'
import { clientChildren, heraldIngestRun, heraldRun, heraldWorkspace, mqttRun, serviceChildren, split } from './lib/runs.mjs'
import { heraldGroupRun } from './lib/group-runs.mjs'

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
    'no-save': { type: 'boolean', default: false }
  }
})
const SCENARIOS = ['s1', 's2', 's3', 's4', 's5', 's6', 's7', 's8', 's9', 's10', 's11']
const only = opts.only === undefined ? SCENARIOS : opts.only.split(',').map((s) => s.trim())
for (const s of only) {
  if (!SCENARIOS.includes(s)) {
    process.stderr.write(`unknown scenario "${s}"; choose from ${SCENARIOS.join(', ')}\n`)
    process.exit(2)
  }
}

/** Sizes of each scenario; quick runs are for checking the harness, not for judging targets. */
const SIZE = opts.quick
  ? { s11: 10_000, s1: 20_000, s1StopWait: 1000, s1Rate: 2000, s2: 2000, s3: 200, s4: 50_000, s5: 50_000, s6Clients: 100, s7Guests: 50, s7Subs: 100, s10: 2000, s9: 20_000, s9Slow: 400, minutes: 2 }
  : { s11: 100_000, s1: 200_000, s1StopWait: 5000, s1Rate: 10_000, s2: 20_000, s3: 2000, s4: 1_000_000, s5: 300_000, s6Clients: 1000, s7Guests: 500, s7Subs: 1000, s10: 10_000, s9: 200_000, s9Slow: 2000, minutes: 6 }
const FAN_OUT = 20
const FAN_IN = 100
/** Processes on each side of a many-endpoint scenario (the machine has few cores). */
const SIDE_PROCS = 4
const PROFILE_DIR = join(ROOT, 'bench/results/profiles')

const mosq = findMosquitto()
const rows = []
const raw = {}
const failures = []

function deadlineIn (minutes = SIZE.minutes) {
  return Date.now() + minutes * 60_000
}

function nodeArgsFor (scenario) {
  if (!opts['cpu-prof']) return []
  const dir = join(PROFILE_DIR, scenario)
  mkdirSync(dir, { recursive: true })
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`]
}

function log (msg) {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${msg}\n`)
}

/**
 * A table row. `better` says which way is good ('higher' or 'lower'); `target` is
 * { vs: 'mosquitto' | null, value, text } checked only in full runs.
 */
function row (scenario, metric, unit, better, herald, mosquitto, aedes, target = null) {
  const ratio = (ref) => (herald === null || ref === null || ref === undefined || ref === 0) ? null : herald / ref
  const r = { scenario, metric, unit, better, herald, mosquitto, aedes, vsMosquitto: ratio(mosquitto), vsAedes: ratio(aedes), target: target?.text ?? null, pass: null }
  if (target !== null && herald !== null) {
    const measured = target.vs === 'mosquitto' ? r.vsMosquitto : herald
    if (measured !== null) r.pass = better === 'higher' ? measured >= target.value : measured <= target.value
  }
  if (opts.quick && target !== null) r.pass = null
  rows.push(r)
  return r
}

async function withBroker (start, fn) {
  const broker = await start()
  try {
    return await fn(broker)
  } finally {
    await broker.stop()
  }
}

/** Runs `fn` against Mosquitto and aedes; a missing Mosquitto gives null, never a made-up figure. */
async function references (name, fn) {
  const out = { mosquitto: null, aedes: null }
  if (mosq !== null) {
    log(`${name}: Mosquitto`)
    out.mosquitto = await withBroker(() => startMosquitto(mosq, deadlineIn(1)), fn)
  }
  log(`${name}: aedes`)
  out.aedes = await withBroker(() => startAedes(deadlineIn(1)), fn)
  return out
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: 1 service -> broker -> 1 client

async function s1 () {
  const n = SIZE.s1
  const pipelined = await references('s1 pipelined', (b) => mqttRun(b, { pubClients: 1, pubProcs: 1, count: n, inflight: 1000, subClients: 1, subProcs: 1, deadline: deadlineIn() }))
  log('s1: Herald full load')
  const herald = await heraldRun({ services: 1, serviceProcs: 1, count: n, clients: 1, clientProcs: 1, deadline: deadlineIn(), nodeArgs: nodeArgsFor('s1') })
  const stopWait = await references('s1 stop-and-wait', (b) => mqttRun(b, { pubClients: 1, pubProcs: 1, count: SIZE.s1StopWait, inflight: 1, subClients: 1, subProcs: 1, deadline: deadlineIn() }))
  const rate = 1000
  const paced = await references('s1 at 1,000/s', (b) => mqttRun(b, { pubClients: 1, pubProcs: 1, count: SIZE.s1Rate, inflight: 1000, rate, subClients: 1, subProcs: 1, deadline: deadlineIn() }))
  log('s1: Herald at 1,000/s')
  const heraldPaced = await heraldRun({ services: 1, serviceProcs: 1, count: SIZE.s1Rate, rate, clients: 1, clientProcs: 1, deadline: deadlineIn() })
  // the client's positions in the faster mode, safe against process crashes only ([CLI-POS-5])
  log('s1: Herald full load, process-crash positions')
  const heraldCrashOnly = await heraldRun({ services: 1, serviceProcs: 1, count: n, clients: 1, clientProcs: 1, deadline: deadlineIn(), durability: 'process-crash' })
  log('s1: Herald at 1,000/s, process-crash positions')
  const heraldCrashOnlyPaced = await heraldRun({ services: 1, serviceProcs: 1, count: SIZE.s1Rate, rate, clients: 1, clientProcs: 1, deadline: deadlineIn(), durability: 'process-crash' })
  raw.s1 = { pipelined, herald, stopWait, paced, heraldPaced, heraldCrashOnly, heraldCrashOnlyPaced }
  const v = (r, k) => r === null ? null : r[k]
  const l = (r, k) => r === null || r.latency === null ? null : r.latency[k]
  row('1 service -> 1 client', 'throughput, QoS 1 pipelined refs', 'events/s', 'higher', herald.perSecond, v(pipelined.mosquitto, 'perSecond'), v(pipelined.aedes, 'perSecond'), { vs: 'mosquitto', value: 1.0, text: '>= 1.0x Mosquitto (aim 2x)' })
  row('1 service -> 1 client', 'throughput, QoS 1 stop-and-wait refs', 'events/s', 'higher', herald.perSecond, v(stopWait.mosquitto, 'perSecond'), v(stopWait.aedes, 'perSecond'))
  row('1 service -> 1 client', 'latency p50, full load', 'ms', 'lower', l(herald, 'p50'), l(pipelined.mosquitto, 'p50'), l(pipelined.aedes, 'p50'))
  row('1 service -> 1 client', 'latency p99, full load', 'ms', 'lower', l(herald, 'p99'), l(pipelined.mosquitto, 'p99'), l(pipelined.aedes, 'p99'))
  row('1 service -> 1 client', 'latency p50 at 1,000 events/s', 'ms', 'lower', l(heraldPaced, 'p50'), l(paced.mosquitto, 'p50'), l(paced.aedes, 'p50'))
  row('1 service -> 1 client', 'latency p99 at 1,000 events/s', 'ms', 'lower', l(heraldPaced, 'p99'), l(paced.mosquitto, 'p99'), l(paced.aedes, 'p99'), { vs: null, value: 10, text: '<= 10 ms' })
  const cpu = (r) => r === null ? null : r.cpuPerEvent.clients
  row('1 service -> 1 client', 'client CPU per event, full load (positions: power-loss, the default)', 'µs', 'lower', cpu(herald), null, null)
  row('1 service -> 1 client', 'client CPU per event, full load (positions: process-crash)', 'µs', 'lower', cpu(heraldCrashOnly), null, null)
  row('1 service -> 1 client', 'throughput, positions process-crash (refs QoS 1 pipelined)', 'events/s', 'higher', heraldCrashOnly.perSecond, v(pipelined.mosquitto, 'perSecond'), v(pipelined.aedes, 'perSecond'))
  row('1 service -> 1 client', 'latency p99 at 1,000 events/s, positions process-crash', 'ms', 'lower', l(heraldCrashOnlyPaced, 'p99'), l(paced.mosquitto, 'p99'), l(paced.aedes, 'p99'))
  row('1 service -> 1 client', 'client CPU per event at 1,000 events/s (power-loss)', 'µs', 'lower', cpu(heraldPaced), null, null)
  row('1 service -> 1 client', 'client CPU per event at 1,000 events/s (process-crash)', 'µs', 'lower', cpu(heraldCrashOnlyPaced), null, null)
}

// Scenario 11: brokers on PostgreSQL ([PG-*], [CLUSTER-*]). Scenario 1's shape (1 service, 1
// client) on the single SQLite broker, then on 1 broker and on 2 brokers sharing one PostgreSQL
// (the service on one broker, the client on the other), in the same run: throughput at full load,
// and latency at 1,000 events/s. A fresh database per run; fsync and synchronous_commit on.
async function s11 () {
  const n = SIZE.s11
  const rate = 1000
  const paced = SIZE.s1Rate
  const pg = await startPostgres()
  const runs = {}
  try {
    for (const [name, brokers] of [['sqlite', 1], ['pg1', 1], ['pg2', 2]]) {
      const storeUrl = name === 'sqlite' ? null : await pg.database()
      log(`s11: ${name} full load`)
      const full = await heraldRun({ services: 1, serviceProcs: 1, count: n, clients: 1, clientProcs: 1, deadline: deadlineIn(), storeUrl, brokers })
      log(`s11: ${name} at 1,000/s`)
      const storePaced = name === 'sqlite' ? null : await pg.database()
      const slow = await heraldRun({ services: 1, serviceProcs: 1, count: paced, rate, clients: 1, clientProcs: 1, deadline: deadlineIn(), storeUrl: storePaced, brokers })
      runs[name] = { full, slow }
    }
  } finally {
    await pg.remove()
  }
  raw.s11 = runs
  const l = (r, k) => r.latency === null ? null : r.latency[k]
  for (const [name, label] of [['pg1', '1 broker on PostgreSQL'], ['pg2', '2 brokers on PostgreSQL (service on one, client on the other)']]) {
    const r = runs[name]
    const s = runs.sqlite
    // the "Mosquitto" column holds the single SQLite broker of the same run
    row(`cluster: ${label}`, 'throughput, full load (vs SQLite broker)', 'events/s', 'higher', r.full.perSecond, s.full.perSecond, null)
    row(`cluster: ${label}`, 'latency p50 at 1,000 events/s (vs SQLite broker)', 'ms', 'lower', l(r.slow, 'p50'), l(s.slow, 'p50'), null)
    row(`cluster: ${label}`, 'latency p99 at 1,000 events/s (vs SQLite broker)', 'ms', 'lower', l(r.slow, 'p99'), l(s.slow, 'p99'), null)
    row(`cluster: ${label}`, 'broker CPU per event, full load (all brokers; vs SQLite broker)', 'µs', 'lower', r.full.cpuPerEvent.broker, s.full.cpuPerEvent.broker, null)
  }
}

// Scenario 8: plain MQTT ([PLAIN-*]): what the view and ingest cost. Scenario 1's Herald run
// without a plain client, then with one plain subscriber on herald/v1/events/# (QoS 0, then 1),
// in the same run; then ingest: a plain publisher raising by QoS 1 publish, against the QoS 1
// pipelined references.
async function s8 () {
  const n = SIZE.s1
  const base = { services: 1, serviceProcs: 1, count: n, clients: 1, clientProcs: 1 }
  log('s8: Herald full load, no plain client')
  const alone = await heraldRun({ ...base, deadline: deadlineIn() })
  log('s8: Herald full load, a plain subscriber at QoS 0')
  const view0 = await heraldRun({ ...base, deadline: deadlineIn(), plainSubscriber: { qos: 0 } })
  log('s8: Herald full load, a plain subscriber at QoS 1')
  const view1 = await heraldRun({ ...base, deadline: deadlineIn(), plainSubscriber: { qos: 1 } })
  const refs = await references('s8 pipelined', (b) => mqttRun(b, { pubClients: 1, pubProcs: 1, count: n, inflight: 1000, subClients: 1, subProcs: 1, deadline: deadlineIn() }))
  log('s8: Herald ingest, a plain publisher at QoS 1')
  const ingest = await heraldIngestRun({ count: n, inflight: 1000, deadline: deadlineIn(), nodeArgs: nodeArgsFor('s8') })
  raw.s8 = { alone, view0, view1, ingest, refs }
  const scen = 'plain MQTT view and ingest'
  const m = refs.mosquitto?.perSecond ?? null
  const a = refs.aedes?.perSecond ?? null
  row(scen, 'client endpoint events/s, no plain client (scenario 1)', 'events/s', 'higher', alone.perSecond, m, a)
  row(scen, 'client endpoint events/s, a plain view subscriber at QoS 0', 'events/s', 'higher', view0.perSecond, m, a)
  row(scen, 'client endpoint events/s, a plain view subscriber at QoS 1', 'events/s', 'higher', view1.perSecond, m, a)
  row(scen, 'plain view subscriber events/s, QoS 0', 'events/s', 'higher', view0.plainView?.perSecond ?? null, m, a)
  row(scen, 'plain view subscriber events/s, QoS 1', 'events/s', 'higher', view1.plainView?.perSecond ?? null, m, a)
  row(scen, 'broker CPU per event, no plain client', 'µs', 'lower', alone.cpuPerEvent.broker, null, null)
  row(scen, 'broker CPU per event, a plain view subscriber at QoS 0', 'µs', 'lower', view0.cpuPerEvent.broker, null, null)
  row(scen, 'broker CPU per event, a plain view subscriber at QoS 1', 'µs', 'lower', view1.cpuPerEvent.broker, null, null)
  row(scen, 'ingest: QoS 1 publish -> client endpoint, events/s', 'events/s', 'higher', ingest.perSecond, m, a)
  row(scen, 'ingest: PUBACKs/s (each after the commit)', 'events/s', 'higher', ingest.ackedPerSecond, null, null)
  row(scen, 'ingest: latency p50, publish -> client endpoint', 'ms', 'lower', ingest.latency?.p50 ?? null, refs.mosquitto?.latency?.p50 ?? null, refs.aedes?.latency?.p50 ?? null)
  row(scen, 'ingest: latency p99, publish -> client endpoint', 'ms', 'lower', ingest.latency?.p99 ?? null, refs.mosquitto?.latency?.p99 ?? null, refs.aedes?.latency?.p99 ?? null)
  row(scen, 'ingest: broker CPU per event', 'µs', 'lower', ingest.cpuPerEvent.broker, null, null)
}

// Scenario 9 (issue 11 §5, §6): the client endpoint alone, draining a stored backlog (8 services), one event at a time against batches ([CLI-BATCH-*]) and 8 concurrent handlers
// sequenced by service ([CLI-CONC-*]), in the same run on the same stored events: each mode a fresh
// client process with its own positions file (default durability), from its first handler call to
// its last, and its CPU per event. Then the same with a handler that waits 2 ms (an I/O call), one
// at a time against concurrency 8, over the first SIZE.s9Slow events (stored first, finely interleaved).
async function s9 () {
  const slow = SIZE.s9Slow
  const n = SIZE.s9 + slow
  const services = 8
  if (slow % services !== 0 || SIZE.s9 % services !== 0) throw new BenchError(`s9: sizes ${SIZE.s9} and ${slow} must divide by ${services} services`)
  const deadline = deadlineIn(SIZE.minutes * 2)
  const ws = await heraldWorkspace(services * 2)
  const children = []
  let broker = null
  try {
    broker = await startHerald({ site: ws.site, dataDir: join(ws.dir, 'data') }, deadline)
    // first the events of the slow-handler modes, 8 services with small windows so that they are
    // stored finely interleaved (a service's frames hold at most its window); then the bulk
    for (const [first, count, window] of [[0, slow / services, 16], [services, SIZE.s9 / services, 10_000]]) {
      log(`s9: storing ${count * services} events from ${services} services (window ${window})`)
      const sv = serviceChildren({ url: broker.url, dir: ws.dir, services, procs: 1, first, count, window, maxUnacked: 4000 })
      children.push(...sv)
      await Promise.all(sv.map((c) => c.waitFor('ready', 'services ready', deadline)))
      for (const c of sv) c.send('go')
      await Promise.all(sv.map((c) => c.waitFor('drained', `all ${count * services} events stored at the broker`, deadline)))
    }
    const modes = [
      { name: 'one at a time', prefix: 'one', expect: n },
      { name: 'batch maxEvents 100', prefix: 'b100', expect: n, batch: { maxEvents: 100, maxWaitMs: 50 } },
      { name: 'batch maxEvents 500', prefix: 'b500', expect: n, batch: { maxEvents: 500, maxWaitMs: 50 } },
      { name: 'concurrency 8', prefix: 'c8', expect: n, concurrency: 8 },
      { name: `one at a time, handler waits 2 ms (${slow.toLocaleString('en')} events)`, prefix: 'slow1', expect: slow, handlerWaitMs: 2 },
      { name: `concurrency 8, handler waits 2 ms (${slow.toLocaleString('en')} events)`, prefix: 'slow8', expect: slow, concurrency: 8, handlerWaitMs: 2 }
    ]
    const results = {}
    for (const m of modes) {
      log(`s9: client endpoint, ${m.name}`)
      const [client] = clientChildren({ url: broker.url, dir: ws.dir, clients: 1, procs: 1, expect: m.expect, prefix: m.prefix, batch: m.batch, concurrency: m.concurrency, handlerWaitMs: m.handlerWaitMs })
      children.push(client)
      await client.waitFor('ready', 'client subscribed', deadline)
      const cpu0 = client.cpu()
      const result = (await client.waitFor('result', `${m.expect} events at the client`, deadline)).result
      const cpu = client.cpu() - cpu0
      await client.kill()
      results[m.prefix] = { events: m.expect, seconds: (result.last - result.first) / 1000, perSecond: m.expect / ((result.last - result.first) / 1000), cpuPerEvent: Math.round(cpu * 1000 / m.expect * 10) / 10, redelivered: result.redelivered }
      row('client batches and concurrency', `client endpoint events/s, ${m.name}`, 'events/s', 'higher', results[m.prefix].perSecond, null, null)
      row('client batches and concurrency', `client CPU per event, ${m.name}`, 'µs', 'lower', results[m.prefix].cpuPerEvent, null, null)
    }
    raw.s9 = { events: n, services, ...results }
    return raw.s9
  } finally {
    await killEach(children)
    if (broker !== null) await broker.child.kill()
    await ws.dispose()
  }
}

// Scenario 10: consumer groups ([GROUP-*]): 8 services raise SIZE.s10 events each; a plain
// subscription (one client endpoint), then a group of 1 member process, then of 3, in the same run.
// A group pays a round trip and a share of the broker's group commit per event per segment, and
// events of one service share a segment, so its parallelism is bounded by the services.
async function s10 () {
  const services = 8
  const n = SIZE.s10
  const base = { services, serviceProcs: 2, count: n }
  log('s10: Herald, a plain subscription')
  const plain = await heraldRun({ ...base, clients: 1, clientProcs: 1, deadline: deadlineIn() })
  log('s10: Herald, a group of 1 member')
  const one = await heraldGroupRun({ ...base, members: 1, deadline: deadlineIn() })
  log('s10: Herald, a group of 3 members')
  const three = await heraldGroupRun({ ...base, members: 3, deadline: deadlineIn() })
  raw.s10 = { plain, one, three }
  const scen = `consumer group, ${services} services`
  row(scen, 'events/s, a plain subscription (1 client endpoint)', 'events/s', 'higher', plain.perSecond, null, null)
  row(scen, 'events/s, a group of 1 member process', 'events/s', 'higher', one.perSecond, null, null)
  row(scen, 'events/s, a group of 3 member processes', 'events/s', 'higher', three.perSecond, null, null)
  row(scen, 'redelivered, group of 3 (no crash: 0 expected)', 'events', 'lower', three.redelivered, null, null)
}

// Scenario 2: fan-out, 1 service -> 20 clients
async function s2 () {
  const n = SIZE.s2
  const refs = await references('s2 fan-out', (b) => mqttRun(b, { pubClients: 1, pubProcs: 1, count: n, inflight: 1000, subClients: FAN_OUT, subProcs: SIDE_PROCS, deadline: deadlineIn() }))
  log('s2: Herald fan-out')
  const herald = await heraldRun({ services: 1, serviceProcs: 1, count: n, clients: FAN_OUT, clientProcs: SIDE_PROCS, deadline: deadlineIn(), nodeArgs: nodeArgsFor('s2') })
  raw.s2 = { ...refs, herald }
  row(`fan-out 1 -> ${FAN_OUT} clients`, 'deliveries/s', 'deliveries/s', 'higher', herald.perSecond, refs.mosquitto?.perSecond ?? null, refs.aedes?.perSecond ?? null, { vs: 'mosquitto', value: 1.0, text: '>= 1.0x Mosquitto' })
}

// Scenario 3: fan-in, 100 services -> 1 client
async function s3 () {
  const n = SIZE.s3
  const refs = await references('s3 fan-in', (b) => mqttRun(b, { pubClients: FAN_IN, pubProcs: SIDE_PROCS, count: n, inflight: 1000, subClients: 1, subProcs: 1, deadline: deadlineIn() }))
  log('s3: Herald fan-in')
  const herald = await heraldRun({ services: FAN_IN, serviceProcs: SIDE_PROCS, count: n, maxUnacked: 2000, clients: 1, clientProcs: 1, deadline: deadlineIn(), nodeArgs: nodeArgsFor('s3') })
  raw.s3 = { ...refs, herald }
  row(`fan-in ${FAN_IN} services -> 1 client`, 'events/s', 'events/s', 'higher', herald.perSecond, refs.mosquitto?.perSecond ?? null, refs.aedes?.perSecond ?? null)
}

// Scenario 4: backlog drain; also gives scenario 6's memory with the stored events
async function s4 () {
  const n = SIZE.s4
  const deadline = deadlineIn(SIZE.minutes * 2)
  const ws = await heraldWorkspace(1)
  const children = []
  let broker = null
  const nodeArgs = nodeArgsFor('s4')
  try {
    const port = await freePort()
    const url = `mqtt://127.0.0.1:${port}`
    log(`s4: raising ${n} events with the broker down`)
    const [service] = serviceChildren({ url, dir: ws.dir, services: 1, procs: 1, count: n, window: 10_000, maxUnacked: 0, offline: true, nodeArgs })
    children.push(service)
    await service.waitFor('ready', 'service ready', deadline)
    service.send('go')
    const raised = (await service.waitFor('raised', 'every raise() resolved', deadline)).raised
    const [client] = clientChildren({ url, dir: ws.dir, clients: 1, procs: 1, expect: n, nodeArgs })
    children.push(client)
    log('s4: starting the broker')
    const t0 = nowMs()
    broker = await startHerald({ site: ws.site, dataDir: join(ws.dir, 'data'), port, nodeArgs }, deadline)
    const drained = (await service.waitFor('drained', `all ${n} events stored at the broker`, deadline)).drained
    const stored = (drained.end - t0) / 1000
    const rssStored = broker.child.rss()
    const result = (await client.waitFor('result', `all ${n} events at the client`, deadline)).result
    const delivered = (result.last - t0) / 1000
    const rssAfter = broker.child.rss()
    // the same store, opened by a fresh broker process
    if (nodeArgs.length > 0) service.send('exit')
    await killEach(children)
    await broker.stop()
    broker = await startHerald({ site: ws.site, dataDir: join(ws.dir, 'data') }, deadline)
    const rssRestart = broker.child.rss()
    raw.s4 = { events: n, raiseSeconds: (raised.end - raised.start) / 1000, stored, delivered, redelivered: result.redelivered, rssStored, rssAfter, rssRestart }
    row('backlog drain', `${n.toLocaleString('en')} events: broker start -> all stored`, 's', 'lower', stored, null, null, { vs: null, value: 20, text: '<= 20 s' })
    row('backlog drain', `${n.toLocaleString('en')} events: broker start -> all at the client`, 's', 'lower', delivered, null, null, { vs: null, value: 20, text: '<= 20 s' })
    return raw.s4
  } finally {
    await killEach(children)
    if (broker !== null) await broker.child.kill()
    await ws.dispose()
  }
}

// Scenario 5: raise() rate into level 2 (fsync'd), no broker
async function s5 () {
  const n = SIZE.s5
  const ws = await heraldWorkspace(1)
  const deadline = deadlineIn()
  try {
    log(`s5: ${n} raise() calls, no broker`)
    const [service] = serviceChildren({ url: null, dir: ws.dir, services: 1, procs: 1, count: n, window: 10_000, maxUnacked: 0, offline: true, nodeArgs: nodeArgsFor('s5') })
    try {
      await service.waitFor('ready', 'service ready', deadline)
      service.send('go')
      const raised = (await service.waitFor('raised', 'every raise() resolved', deadline)).raised
      const perSecond = n / ((raised.end - raised.start) / 1000)
      raw.s5 = { events: n, seconds: (raised.end - raised.start) / 1000, perSecond }
      row('gateway raise rate', 'raise() resolved durably (level 2, fsync)', 'events/s', 'higher', perSecond, null, null, { vs: null, value: 100_000, text: '>= 100,000/s' })
    } finally {
      await service.stop(10_000)
    }
  } finally {
    await ws.dispose()
  }
}

// Scenario 6: broker memory with 1M stored events (from s4) and with 1,000 connected clients
async function s6 () {
  const stored = raw.s4 ?? await s4()
  const mb = (b) => b === null ? null : b / (1024 * 1024)
  // references hold the same number of QoS 1 messages for one offline persistent session
  const refStored = { mosquitto: null, aedes: null }
  const hold = async (broker) => {
    const sub = nodeChild('mqtt-sub offline', proc('mqtt-sub.mjs'), { url: broker.url, topic: 'bench/t', clients: 1, expect: 0, clean: false, clientIdPrefix: 'bench-offline', exitAfterSubscribe: true })
    await sub.waitFor('ready', 'offline session', deadlineIn(1))
    const pub = nodeChild('mqtt-pub', proc('mqtt-pub.mjs'), { url: broker.url, topic: 'bench/t', clients: 1, count: stored.events, inflight: 1000 })
    try {
      await pub.waitFor('ready', 'publisher', deadlineIn(1))
      pub.send('go')
      await pub.waitFor('result', 'all PUBACKs', deadlineIn())
      return broker.child.rss()
    } finally {
      await killEach([sub, pub])
    }
  }
  if (mosq !== null) {
    log('s6: Mosquitto holding the events')
    refStored.mosquitto = await withBroker(() => startMosquitto(mosq, deadlineIn(1)), hold)
  }
  log('s6: aedes holding the events')
  refStored.aedes = await withBroker(() => startAedes(deadlineIn(1)), hold)
  row('broker memory', `RSS, ${stored.events.toLocaleString('en')} events stored (after drain)`, 'MB', 'lower', mb(stored.rssAfter), mb(refStored.mosquitto), mb(refStored.aedes), { vs: null, value: 300, text: '<= 300 MB' })
  row('broker memory', `RSS, ${stored.events.toLocaleString('en')} events stored (fresh process)`, 'MB', 'lower', mb(stored.rssRestart), null, null)

  const clients = SIZE.s6Clients
  const connect = async (start, procs) => {
    const broker = await start()
    const children = []
    try {
      const ws = await heraldWorkspace(1)
      try {
        const idle = broker.child.rss()
        const list = broker.kind === 'herald'
          ? clientChildren({ url: broker.url, dir: ws.dir, clients, procs, expect: 0, guests: true, prefix: 'idle' })
          : split(clients, procs).map((c, i) => nodeChild(`mqtt-sub ${i}`, proc('mqtt-sub.mjs'), { url: broker.url, topic: 'bench/t', clients: c, expect: 0 }))
        children.push(...list)
        await Promise.all(list.map((c) => c.waitFor('ready', `${clients} connections`, deadlineIn())))
        await new Promise((resolve) => setTimeout(resolve, 1000))
        return { idle, connected: broker.child.rss() }
      } finally {
        await ws.dispose()
      }
    } finally {
      await killEach(children)
      await broker.stop()
    }
  }
  const refClients = { mosquitto: null, aedes: null }
  if (mosq !== null) {
    log(`s6: Mosquitto with ${clients} clients`)
    refClients.mosquitto = await connect(() => startMosquitto(mosq, deadlineIn(1)), SIDE_PROCS)
  }
  log(`s6: aedes with ${clients} clients`)
  refClients.aedes = await connect(() => startAedes(deadlineIn(1)), SIDE_PROCS)
  log(`s6: Herald with ${clients} client endpoints`)
  const ws = await heraldWorkspace(1)
  let herald
  try {
    herald = await connect(() => startHerald({ site: ws.site, dataDir: join(ws.dir, 'data') }, deadlineIn(1)), SIDE_PROCS)
  } finally {
    await ws.dispose()
  }
  raw.s6 = { stored: { herald: stored, ...refStored }, clients: { herald, ...refClients } }
  row('broker memory', `RSS, ${clients.toLocaleString('en')} connected clients`, 'MB', 'lower', mb(herald.connected), mb(refClients.mosquitto?.connected ?? null), mb(refClients.aedes?.connected ?? null))
}

// Scenario 7: back-pressure. Never-reading connections (500 guests with one subscription each, 5
// users with 1,000 each) on a 5 MiB queue; the broker's peak RSS, and how long a well-behaved
// client then takes to connect, subscribe and receive a live event. The never-reading side is
// test/fixtures/slow-readers.mjs, the same peers as test/back-pressure.test.ts.
async function s7 () {
  const deadline = deadlineIn()
  const ws = await heraldWorkspace(1)
  const children = []
  let broker = null
  let sampler = null
  try {
    broker = await startHerald({ site: ws.site, dataDir: join(ws.dir, 'data'), nodeArgs: nodeArgsFor('s7') }, deadline)
    const count = 5000
    const helper = nodeChild('back-pressure', proc('back-pressure.mjs'), { url: broker.url, serviceId: 'svc-0', secret: SERVICE_SECRET, user: USER, password: USER_PASSWORD, event: EVENT, count, payloadBytes: 1024 })
    children.push(helper)
    log(`s7: filling the queue with ${count} events of 1 KiB`)
    await helper.waitFor('filled', 'the queue filled', deadline)
    const rssFilled = broker.child.rss()
    let peak = rssFilled
    sampler = setInterval(() => { peak = Math.max(peak, broker.child.rss() ?? 0) }, 20)
    const guests = SIZE.s7Guests
    const users = 5
    log(`s7: ${guests} never-reading guests and ${users} users with ${SIZE.s7Subs} subscriptions each`)
    const t0 = nowMs()
    const slow = new Child('slow readers', process.execPath, [join(ROOT, 'test/fixtures/slow-readers.mjs'), JSON.stringify({
      port: Number(new URL(broker.url).port), event: EVENT, window: 10_000, guests, hosts: 50,
      users: Array.from({ length: users }, (_, i) => ({ user: USER, password: USER_PASSWORD, clientName: `heavy-${i}` })), subsPerUser: SIZE.s7Subs
    })])
    children.push(slow)
    await slow.waitFor((m) => typeof m === 'string' && m.startsWith('ready '), 'the slow readers connected', deadline)
    const connectSeconds = (nowMs() - t0) / 1000
    helper.send('good')
    const good = (await helper.waitFor('good', 'the good client\'s live event', deadline)).good
    // the broker keeps delivering to the others: watch its memory a little longer
    await new Promise((resolve) => setTimeout(resolve, 3000))
    clearInterval(sampler)
    sampler = null
    peak = Math.max(peak, broker.child.rss() ?? 0)
    const mb = (b) => b / (1024 * 1024)
    raw.s7 = { events: count, payloadBytes: 1024, guests, users, subsPerUser: SIZE.s7Subs, connectSeconds, rssFilled, rssPeak: peak, goodClientMs: good.ms }
    const what = `${guests} never-reading guests + ${users} x ${SIZE.s7Subs.toLocaleString('en')} subscriptions, 5 MiB queue`
    row('back-pressure', `broker RSS peak, ${what}`, 'MB', 'lower', mb(peak), null, null, { vs: null, value: 600e6 / (1024 * 1024), text: '< 600 MB' })
    row('back-pressure', 'well-behaved client meanwhile: connect, subscribe, live event', 'ms', 'lower', good.ms, null, null, { vs: null, value: 1000, text: '<= 1 s' })
  } finally {
    if (sampler !== null) clearInterval(sampler)
    await killEach(children)
    if (broker !== null) await broker.child.kill()
    await ws.dispose()
  }
}

// ---------------------------------------------------------------------------------------------

function machine () {
  const c = cpus()
  return { cpu: c[0]?.model ?? 'unknown', cores: c.length, memGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10, os: `${platform()} ${release()}` }
}

function versions () {
  const pkg = (p) => JSON.parse(readFileSync(join(ROOT, p), 'utf8')).version
  let commit = 'unknown'
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
  } catch { /* not a git checkout */ }
  return {
    node: process.version,
    mosquitto: mosq?.version ?? null,
    aedes: pkg('node_modules/aedes/package.json'),
    mqtt: pkg('node_modules/mqtt/package.json'),
    'better-sqlite3': pkg('node_modules/better-sqlite3/package.json'),
    herald: `${pkg('package.json')} (${commit})`
  }
}

function fmt (v, unit) {
  if (v === null || v === undefined) return '-'
  if (unit === 'ms') return v < 10 ? v.toFixed(2) : v.toFixed(1)
  if (unit === 's' || unit === 'MB' || unit === 'µs') return v.toFixed(1)
  return Math.round(v).toLocaleString('en')
}

function table () {
  const head = ['scenario', 'metric', 'unit', 'Herald', 'Mosquitto', 'aedes', 'H/Mosq', 'H/aedes', 'target', 'result']
  const body = rows.map((r) => [
    r.scenario, r.metric, r.unit, fmt(r.herald, r.unit), fmt(r.mosquitto, r.unit), fmt(r.aedes, r.unit),
    r.vsMosquitto === null ? '-' : `${r.vsMosquitto.toFixed(2)}x`, r.vsAedes === null ? '-' : `${r.vsAedes.toFixed(2)}x`,
    r.target ?? '', r.pass === null ? (r.target === null ? '' : 'not judged') : r.pass ? 'pass' : 'MISS'
  ])
  for (const f of failures) body.push([f.scenario, `FAILED: ${f.error.split('\n')[0]}`, '', '', '', '', '', '', '', 'FAIL'])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)))
  const line = (cells) => `| ${cells.map((c, i) => (i >= 3 && i <= 7 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ')} |`
  return [line(head), `|${widths.map((w, i) => (i >= 3 && i <= 7 ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`, ...body.map(line)].join('\n')
}

const started = new Date()
if (mosq === null) {
  log('Mosquitto is not installed: its column stays empty. Install it with: sudo apt-get install mosquitto')
}
log(`Herald benchmark, ${opts.quick ? 'quick' : 'full'} run: ${only.join(', ')}`)
const fns = { s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 }
for (const s of only) {
  const t = nowMs()
  try {
    await fns[s]()
  } catch (err) {
    const msg = err instanceof BenchError ? err.message : (err?.stack ?? String(err))
    log(`${s} FAILED: ${msg}`)
    failures.push({ scenario: s, error: msg })
  }
  log(`${s} took ${((nowMs() - t) / 1000).toFixed(1)} s`)
}

const report = {
  date: started.toISOString(),
  mode: opts.quick ? 'quick' : 'full',
  scenarios: only,
  machine: machine(),
  versions: versions(),
  notes: mosq === null ? ['Mosquitto is not installed (sudo apt-get install mosquitto): no Mosquitto figures'] : [],
  rows,
  failures,
  raw
}
process.stdout.write(`\nHerald benchmark ${report.date} (${report.mode}) on ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.memGiB} GiB\n`)
process.stdout.write(`${Object.entries(report.versions).map(([k, v]) => `${k} ${v ?? 'not installed'}`).join(', ')}\n\n`)
process.stdout.write(`${table()}\n`)
if (!opts['no-save']) {
  const dir = join(ROOT, 'bench/results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `${report.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}${opts.quick ? '-quick' : ''}.json`)
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(`\nwritten: ${file}\n`)
}
process.exitCode = failures.length > 0 ? 1 : 0

// Herald client endpoints (positions in SQLite files). argv[2] is JSON:
//   { url, user, password, clients: [{ clientName, positions }], event, expect, start, durability }
// `durability`: the SqlitePositionStore mode, 'power-loss' (the default) or 'process-crash'.
// `batch`: { maxEvents, maxWaitMs }, batch subscriptions ([CLI-BATCH-1]); `concurrency`: handlers at
// once ([CLI-CONC-1]), sequenced by service. Neither: one event at a time (scenario 1's path).
// `handlerWaitMs`: the handler waits that long (a timer, like an I/O call) before it returns.
// Each client subscribes to `event`; prints {"ready"} when all are subscribed, then
// {"result": {first, last, received, redelivered, latency}} once each handled `expect` events
// (never, with expect 0: the clients stay connected until the process is killed).
import { ClientEndpoint, SqlitePositionStore } from '@herald/client-endpoint'
import { Latencies, latencyOf, nowMs, report } from './child.mjs'

// a SIGTERM ends the process normally, so that --cpu-prof writes its profile
process.on('SIGTERM', () => { process.exit(0) })

const a = JSON.parse(process.argv[2])
const total = a.clients.length * a.expect
const lat = new Latencies(total, Math.max(1, Math.floor(total / 200_000)))
let received = 0
let redelivered = 0
let first = null
let last = null
let done = 0
const endpoints = []
await Promise.all(a.clients.map(async (c) => {
  const ep = new ClientEndpoint({
    url: a.url,
    clientName: c.clientName,
    ...(a.user === null ? {} : { user: a.user, password: a.password }),
    positions: new SqlitePositionStore({ database: c.positions, ...(a.durability === undefined ? {} : { durability: a.durability }) }),
    reconnectInitialMs: 20,
    reconnectMaxMs: 200
  }).start()
  ep.on('error', (e) => { process.stderr.write(`${c.clientName} error ${e.code} ${e.message}\n`) })
  endpoints.push(ep)
  let n = 0
  const handle = (e) => {
    const t = nowMs()
    first ??= t
    last = t
    received++
    if (e.redelivered) redelivered++
    lat.add(latencyOf(e.payload))
    if (++n === a.expect && ++done === a.clients.length) {
      report({ result: { first, last, received, redelivered, latency: lat.summary() } })
    }
  }
  if (a.batch !== undefined) {
    await ep.subscribe(a.event, { start: a.start ?? 'all', batch: a.batch }, (events) => { for (const e of events) handle(e) })
  } else if (a.handlerWaitMs !== undefined) {
    await ep.subscribe(a.event, { start: a.start ?? 'all', concurrency: a.concurrency ?? 1 }, async (e) => {
      await new Promise((resolve) => setTimeout(resolve, a.handlerWaitMs))
      handle(e)
    })
  } else if (a.concurrency !== undefined) {
    await ep.subscribe(a.event, { start: a.start ?? 'all', concurrency: a.concurrency }, async (e) => { handle(e) })
  } else {
    await ep.subscribe(a.event, { start: a.start ?? 'all' }, handle)
  }
}))
report({ ready: true })

// Herald service endpoints (two-level persistence, SQLite level fsync'd) raising 200-byte events.
// argv[2] is JSON:
//   { url, services: [{ serviceId, secret, db }], event, count, rate, window, maxUnacked, offline }
// Each service raises `count` events, at most `window` raise() calls unresolved at once and (when
// maxUnacked > 0) at most `maxUnacked` raised and not yet acknowledged by the broker; paced at
// `rate`/s per service if rate > 0. Prints {"ready"} once every service is online (at once when
// `offline`), starts on "go", prints {"raised": {start, end}} when every raise() resolved, then
// {"drained": {end}} when the broker acknowledged everything (not waited for when `url` is null).
import { ServiceEndpoint, createTwoLevelServicePersistence } from '@herald/service-endpoint'
import { command, nowMs, paced, report, stampedPayload } from './child.mjs'

// a SIGTERM ends the process normally, so that --cpu-prof writes its profile
process.on('SIGTERM', () => { process.exit(0) })

const a = JSON.parse(process.argv[2])
const noBroker = a.url === null
const endpoints = await Promise.all(a.services.map(async (s) => {
  const persistence = await createTwoLevelServicePersistence({ path: s.db })
  const ep = new ServiceEndpoint({
    // no broker: a port nobody listens on; the endpoint keeps retrying in the background
    url: a.url ?? 'mqtt://127.0.0.1:1',
    serviceId: s.serviceId,
    secret: s.secret,
    events: [{ name: a.event, category: 'queueing', lifetimeMs: 86_400_000 }],
    persistence,
    reconnectInitialMs: 20,
    reconnectMaxMs: 200
  })
  ep.on('error', (e) => { process.stderr.write(`${s.serviceId} error ${e.code} ${e.message}\n`) })
  ep.on('rejected', (r) => { process.stderr.write(`${s.serviceId} rejected ${r.error.code}\n`) })
  ep.on('dropped', (d) => { process.stderr.write(`${s.serviceId} dropped ${d.total}\n`) })
  return ep
}))
const online = endpoints.map((ep) => new Promise((resolve) => {
  const onStatus = (st) => {
    if (st.state === 'online') {
      ep.off('status', onStatus)
      resolve()
    }
  }
  ep.on('status', onStatus)
}))
for (const ep of endpoints) ep.start()
if (!a.offline) await Promise.all(online)
report({ ready: true })
await command('go')
const start = nowMs()
const poll = setInterval(() => { for (const l of loops) l.kick() }, 1)
const loops = []
const allResolved = endpoints.map((ep) => new Promise((resolve) => {
  let unresolved = 0
  let issued = 0
  let resolved = 0
  const loop = paced(a.count, a.rate ?? 0, () => {
    let room = a.window - unresolved
    if (a.maxUnacked > 0) room = Math.min(room, a.maxUnacked - (issued - ep.counters.acknowledged))
    return room
  }, () => {
    unresolved++
    issued++
    ep.raise(a.event, stampedPayload()).then(() => {
      unresolved--
      if (++resolved === a.count) resolve()
      else loop.kick()
    }, (err) => {
      process.stderr.write(`raise failed: ${err.code} ${err.message}\n`)
      process.exit(1)
    })
  })
  loops.push(loop)
}))
await Promise.all(allResolved)
clearInterval(poll)
report({ raised: { start, end: nowMs(), count: a.count * endpoints.length } })
if (noBroker) {
  await Promise.all(endpoints.map((ep) => ep.close()))
  process.exit(0)
}
await Promise.all(endpoints.map((ep) => ep.drained()))
report({ drained: { end: nowMs() } })
await command('exit')
await Promise.all(endpoints.map((ep) => ep.close()))
process.exit(0)

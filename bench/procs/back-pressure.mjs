// The well-behaved side of the back-pressure scenario (s7). argv[2] is JSON:
//   { url, serviceId, secret, user, password, event, count, payloadBytes }
// Fills the queue: `count` events of `payloadBytes` raised by one service (memory persistence),
// prints {"filled"} once the broker acknowledged them all. On "good" a fresh client endpoint
// connects, subscribes (start "new") and the service raises one more event; prints
// {"good": {"ms"}}: from creating the client to its handler running.
import { ClientEndpoint } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { command, nowMs, report } from './child.mjs'

process.on('SIGTERM', () => { process.exit(0) })

const a = JSON.parse(process.argv[2])
const svc = new ServiceEndpoint({
  url: a.url, serviceId: a.serviceId, secret: a.secret,
  events: [{ name: a.event, category: 'queueing', lifetimeMs: 86_400_000 }],
  reconnectInitialMs: 20, reconnectMaxMs: 200
}).start()
const payload = Buffer.alloc(a.payloadBytes, 0x61)
await Promise.all(Array.from({ length: a.count }, () => svc.raise(a.event, payload)))
await svc.drained()
report({ filled: { events: a.count, bytes: a.count * a.payloadBytes } })

await command('good')
const t0 = nowMs()
const good = new ClientEndpoint({ url: a.url, clientName: 'good', user: a.user, password: a.password }).start()
const got = new Promise((resolve) => {
  void good.subscribe(a.event, { start: 'new' }, () => { resolve(nowMs()) }).then(() => svc.raise(a.event, payload))
})
const at = await got
report({ good: { ms: at - t0 } })

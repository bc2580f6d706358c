// MQTT publishers (mqtt.js, QoS 1) for the reference brokers. argv[2] is JSON:
//   { url, topic, clients, count, inflight, rate, protocolVersion, username, password }
// `clients` connections each publish `count` messages of 200 bytes, at most `inflight` unacknowledged
// (1 = stop-and-wait), paced at `rate`/s per connection if rate > 0. Prints {"ready"} once connected,
// starts on "go", prints {"result": {start, end, sent}} when every PUBACK arrived.
import mqtt from 'mqtt'
import { command, nowMs, paced, report, stampedPayload } from './child.mjs'

const a = JSON.parse(process.argv[2])
const connect = (i) => new Promise((resolve, reject) => {
  const c = mqtt.connect(a.url, { clientId: `bench-pub-${process.pid}-${i}`, protocolVersion: a.protocolVersion ?? 4, clean: true, reconnectPeriod: 0, keepalive: 60, ...(a.username !== undefined ? { username: a.username, password: a.password } : {}) })
  c.once('connect', () => { resolve(c) })
  c.once('error', reject)
})
const clients = await Promise.all(Array.from({ length: a.clients }, (_, i) => connect(i)))
report({ ready: true })
await command('go')
const start = nowMs()
let sent = 0
await Promise.all(clients.map((c) => new Promise((resolve) => {
  let inflight = 0
  let acked = 0
  const loop = paced(a.count, a.rate ?? 0, () => a.inflight - inflight, () => {
    inflight++
    c.publish(a.topic, stampedPayload(), { qos: 1 }, (err) => {
      if (err) {
        process.stderr.write(`publish failed: ${err.message}\n`)
        process.exit(1)
      }
      inflight--
      sent++
      if (++acked === a.count) resolve()
      else loop.kick()
    })
  })
})))
report({ result: { start, end: nowMs(), sent } })
await Promise.all(clients.map((c) => c.endAsync()))
process.exit(0)

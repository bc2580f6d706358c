// MQTT subscribers (mqtt.js, QoS 1) for the reference brokers. argv[2] is JSON:
//   { url, topic, clients, expect, protocolVersion, clean, clientIdPrefix, exitAfterSubscribe,
//     username, password, qos, envelope }
// Each of `clients` connections subscribes to `topic` at `qos` (default 1); with `envelope`, each
// message is Herald's plain-MQTT view envelope ([PLAIN-VIEW-*]), its payload in base64. Prints {"ready"} when all are
// subscribed, then {"result": {first, last, received, latency}} once each got `expect` messages.
// With exitAfterSubscribe, it disconnects after subscribing (a persistent session left offline).
import mqtt from 'mqtt'
import { Latencies, latencyOf, nowMs, report } from './child.mjs'

const a = JSON.parse(process.argv[2])
/** The event's payload bytes out of a view envelope. */
const envelopePayload = (message) => Buffer.from(JSON.parse(message.toString('utf8')).payload, 'base64')
const total = a.clients * a.expect
const lat = new Latencies(total, Math.max(1, Math.floor(total / 200_000)))
let received = 0
let first = null
let last = null
let done = 0
const connect = (i) => new Promise((resolve, reject) => {
  const c = mqtt.connect(a.url, {
    clientId: `${a.clientIdPrefix ?? `bench-sub-${process.pid}`}-${i}`, protocolVersion: a.protocolVersion ?? 4, clean: a.clean ?? true, reconnectPeriod: 0, keepalive: 60,
    ...(a.username !== undefined ? { username: a.username, password: a.password } : {})
  })
  let n = 0
  c.on('message', (_topic, payload) => {
    const t = nowMs()
    first ??= t
    last = t
    received++
    lat.add(latencyOf(a.envelope === true ? envelopePayload(payload) : payload))
    if (++n === a.expect && ++done === a.clients) {
      report({ result: { first, last, received, latency: lat.summary() } })
    }
  })
  c.once('connect', () => {
    c.subscribe(a.topic, { qos: a.qos ?? 1 }, (err) => { if (err) reject(err); else resolve(c) })
  })
  c.once('error', reject)
})
const clients = await Promise.all(Array.from({ length: a.clients }, (_, i) => connect(i)))
if (a.exitAfterSubscribe) {
  await Promise.all(clients.map((c) => c.endAsync()))
  report({ ready: true })
  process.exit(0)
}
report({ ready: true })

// What the dashboard's live tail costs the broker per stored event ([OPS-DASH-5]): the EventTail
// push the broker's onStored makes for every event, dashboard open or not (a fixed ring, a copy of
// at most previewBytes of the payload, no allocation), for several payload sizes and batch sizes;
// and, for scale, what one read (the filter a feed runs once a second) costs.
//
//   npm run build && node bench/event-tail.mjs [--events 2000000]
import { parseArgs } from 'node:util'
import { EventTail } from '@herald/broker'

const { values } = parseArgs({ options: { events: { type: 'string', default: '2000000' } } })
const total = Number(values.events)

function events (n, bytes) {
  const payload = new Uint8Array(bytes).fill(0x61)
  return Array.from({ length: n }, (_, i) => ({
    seq: i, name: i % 2 === 0 ? 'readings' : 'temperature', category: 'queueing', raisedAt: 1, isNull: false, recipient: null, payloadKind: 0,
    payload, position: i, serviceId: 'svc', instance: 'i', receivedAt: Date.now(), uploadAge: 0, expiresAt: null
  }))
}

function measure (bytes, batch) {
  const tail = new EventTail()
  const b = events(batch, bytes)
  const rounds = Math.ceil(total / batch)
  for (let r = 0; r < Math.min(rounds, 1000); r++) tail.push(b) // warm-up
  const t0 = process.hrtime.bigint()
  for (let r = 0; r < rounds; r++) tail.push(b)
  const ns = Number(process.hrtime.bigint() - t0) / (rounds * batch)
  const r0 = process.hrtime.bigint()
  for (let k = 0; k < 100; k++) tail.read({ event: 'readings' }, 100)
  const readUs = Number(process.hrtime.bigint() - r0) / 100 / 1000
  return { payloadBytes: bytes, batch, nsPerEvent: Math.round(ns * 10) / 10, readUs: Math.round(readUs) }
}

const rows = []
for (const bytes of [16, 256, 16 * 1024]) for (const batch of [1, 100]) rows.push(measure(bytes, batch))
console.table(rows)

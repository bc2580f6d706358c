// Plain-MQTT ingest throughput ([PLAIN-INGEST-1]): a `herald broker` process (SQLite, fsync per
// group commit) and mqtt.js devices that pipeline QoS 1 publishes to herald/v1/raise/<event>; counts
// PUBACKs (each one means committed and fsync'd) per second.
//
//   node bench/ingest.mjs [--devices 4] [--events 20000] [--payload 64] [--keyed]
//
// Not part of `npm run bench` yet; prints one line and a JSON summary.
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import mqtt from 'mqtt'

const { values: opts } = parseArgs({
  options: {
    devices: { type: 'string', default: '4' },
    events: { type: 'string', default: '20000' },
    payload: { type: 'string', default: '64' },
    keyed: { type: 'boolean', default: false }
  }
})
const DEVICES = Number(opts.devices)
const EVENTS = Number(opts.events)
const PAYLOAD = Number(opts.payload)
const ROOT = new URL('..', import.meta.url).pathname
const SECRET = 'bench-ingest-secret'

const dir = await mkdtemp(join(tmpdir(), 'herald-bench-ingest-'))
const site = join(dir, 'site.json')
await writeFile(site, JSON.stringify({
  events: [{ name: 'readings', category: 'queueing', lifetime: '1d', maxQueueSize: 10_000_000, access: 'authenticated' }],
  services: [{ id: 'dev', secret: SECRET, events: ['readings'] }],
  users: [{ name: 'reader', password: 'reader-password' }]
}))
const broker = spawn(process.execPath, [...(process.env.INGEST_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.INGEST_PROF}`] : []), join(ROOT, 'cli/bin/herald.js'), 'broker', '--site', site, '--data', join(dir, 'data'), '--port', '0', '--metrics-port', '0', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] })
const lines = createInterface({ input: broker.stdout })
const lineOf = (prefix) => new Promise((resolve, reject) => {
  lines.on('line', (l) => { if (l.startsWith(prefix)) resolve(l.slice(prefix.length)) })
  broker.once('exit', (code) => { reject(new Error(`broker exited ${code}`)) })
})
const [url, metricsUrl] = await Promise.all([lineOf('herald broker listening on '), lineOf('herald broker metrics on ')])
/** Group commits of the broker's store so far (from /metrics). */
async function commits () {
  const text = await (await fetch(metricsUrl)).text()
  return Number(/^herald_store_commit_duration_seconds_count (\d+)/m.exec(text)?.[1] ?? 0)
}

try {
  const clients = await Promise.all(Array.from({ length: DEVICES }, (_, d) => new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: `bench-dev-${d}`, username: 'dev', password: SECRET, protocolVersion: 4, reconnectPeriod: 0 })
    c.once('connect', () => { resolve(c) })
    c.once('error', reject)
  })))
  const perDevice = Math.ceil(EVENTS / DEVICES)
  const body = 'x'.repeat(Math.max(0, PAYLOAD - 12))
  let acked = 0
  const commitsBefore = await commits()
  const t0 = performance.now()
  await Promise.all(clients.map((c, d) => new Promise((resolve, reject) => {
    let mine = 0
    for (let n = 0; n < perDevice; n++) {
      const topic = opts.keyed ? `herald/v1/raise/readings/k/${d}-${n}` : 'herald/v1/raise/readings'
      c.publish(topic, JSON.stringify({ n, b: body }), { qos: 1 }, (err) => {
        if (err) return reject(err)
        acked++
        if (++mine === perDevice) resolve()
      })
    }
  })))
  const s = (performance.now() - t0) / 1000
  for (const c of clients) c.end(true)
  const rate = Math.round(acked / s)
  const groupCommits = (await commits()) - commitsBefore
  process.stdout.write(`ingest: ${acked} QoS 1 publishes from ${DEVICES} mqtt.js devices (${PAYLOAD} B payload${opts.keyed ? ', keyed' : ''}) acknowledged in ${s.toFixed(2)} s: ${rate} publishes/s, ${groupCommits} group commits (${(acked / Math.max(1, groupCommits)).toFixed(0)} publishes per fsync)\n`)
  process.stdout.write(`${JSON.stringify({ devices: DEVICES, events: acked, payloadBytes: PAYLOAD, keyed: opts.keyed, seconds: Number(s.toFixed(3)), publishesPerSecond: rate, groupCommits })}\n`)
} finally {
  broker.kill(process.env.INGEST_PROF ? 'SIGINT' : 'SIGKILL')
  await new Promise((resolve) => { broker.once('exit', resolve) })
  await rm(dir, { recursive: true, force: true })
}

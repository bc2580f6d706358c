// The brokers of a benchmark run: Mosquitto (Debian's package), a plain aedes, and Herald's own
// (through the herald bin), each in its own process on a free loopback port.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createConnection } from 'node:net'
import { HashedSecret } from '@herald/node-runtime'
import { BenchError, Child, freePort, nodeChild } from './proc.mjs'

export const ROOT = new URL('../..', import.meta.url).pathname
const PROCS = join(ROOT, 'bench/procs')
export const proc = (name) => join(PROCS, name)

export const MOSQUITTO_CANDIDATES = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']

/** The mosquitto binary and its version, or null when it is not installed. */
export function findMosquitto () {
  const bin = MOSQUITTO_CANDIDATES.find((p) => existsSync(p))
  if (bin === undefined) return null
  let version = 'unknown'
  try {
    execFileSync(bin, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    // mosquitto -h prints its usage and exits 3
    const m = /mosquitto version (\S+)/.exec(`${err.stdout ?? ''}${err.stderr ?? ''}`)
    if (m !== null) version = m[1]
  }
  return { bin, version }
}

function waitForPort (port, deadline) {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = createConnection({ port, host: '127.0.0.1' })
      s.once('connect', () => { s.destroy(); resolve() })
      s.once('error', () => {
        s.destroy()
        if (Date.now() > deadline) reject(new BenchError(`nothing listens on port ${port}`))
        else setTimeout(attempt, 20)
      })
    }
    attempt()
  })
}

/**
 * Starts Mosquitto on a free port with a generated config: loopback only, anonymous, no limit on
 * queued or in-flight QoS 1 messages (its defaults, 1,000 queued and 20 in flight, drop or throttle
 * QoS 1 messages), persistence off.
 */
export async function startMosquitto (mosq, deadline) {
  const dir = await mkdtemp(join(tmpdir(), 'herald-bench-mosq-'))
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  await writeFile(conf, [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'max_queued_messages 0',
    'max_inflight_messages 0',
    'persistence false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    ''
  ].join('\n'))
  const child = new Child('mosquitto', mosq.bin, ['-c', conf])
  try {
    await waitForPort(port, deadline)
  } catch (err) {
    await child.kill()
    throw err
  }
  return {
    kind: 'mosquitto',
    url: `mqtt://127.0.0.1:${port}`,
    child,
    async stop () {
      await child.kill()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** Starts a plain in-memory aedes in its own node process. */
export async function startAedes (deadline) {
  const child = nodeChild('aedes', proc('aedes-broker.mjs'), {})
  const { url } = await child.waitFor('url', 'aedes listening', deadline)
  return { kind: 'aedes', url, child, async stop () { await child.kill() } }
}

export const SERVICE_SECRET = 'bench-service-secret'
export const USER = 'bench'
export const USER_PASSWORD = 'bench-user-password'
export const EVENT = 'bench'

/** Writes the bench site: one queueing event, `services` services, one user; guests allowed. */
export async function writeSite (dir, services) {
  // one hash (default scrypt cost) shared by every service: hashing 100 would take seconds
  const serviceHash = (await HashedSecret.hash(SERVICE_SECRET)).encode()
  const userHash = (await HashedSecret.hash(USER_PASSWORD)).encode()
  const site = {
    guests: true,
    events: [{ name: EVENT, category: 'queueing', lifetime: '1d', maxQueueSize: 10_000_000, maxPayload: '1KiB', access: 'everyone' }],
    services: Array.from({ length: services }, (_, i) => ({ id: `svc-${i}`, secretHash: serviceHash, events: [EVENT] })),
    users: [{ name: USER, passwordHash: userHash, roles: [] }]
  }
  const path = join(dir, 'site.json')
  await writeFile(path, JSON.stringify(site, null, 1))
  return path
}

/**
 * Starts `herald broker` (the CLI, durable SQLite defaults) on `dataDir`; `port` 0 picks one.
 * `nodeArgs` go to node (e.g. --cpu-prof). Every bench client connects from 127.0.0.1, so the
 * guest limits per address and in all, and the pending connections per address, are raised for the
 * 1,000 idle guests of s6, which connect at once.
 */
export async function startHerald ({ site, dataDir, port = 0, nodeArgs = [], storeUrl = null }, deadline) {
  const limits = ['--max-guest-connections-per-address', '10000', '--max-guest-connections', '10000', '--max-pending-connections-per-address', '10000']
  const child = new Child('herald broker', process.execPath, [...nodeArgs, join(ROOT, 'cli/bin/herald.js'), 'broker', '--site', site, '--data', dataDir, '--port', String(port), '--log-level', 'warn', ...limits, ...(storeUrl !== null ? ['--store', storeUrl] : [])])
  const line = await child.waitFor((m) => typeof m === 'string' && m.startsWith('herald broker listening on '), 'the listening line', deadline)
  return {
    kind: 'herald',
    url: line.slice('herald broker listening on '.length).trim(),
    child,
    async stop () { await child.stop() }
  }
}

/**
 * Back-pressure ([CLI-BACKPRESSURE-1], [CLI-GUEST-1] in docs/protocol.md): connections that never
 * read their socket cost the broker a bounded amount of memory and do not slow anyone else down.
 * A real `herald broker` process, a real ServiceEndpoint filling a 5 MiB queue, and a fixture
 * process with 500 never-reading guests and 5 never-reading users with 1,000 subscriptions each.
 */
import { readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import { startBrokerServer } from '@herald/broker'
import { ClientEndpoint } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { clientClientId, clientKey, clientMessageTopic, clientRequestTopic, decodeEvents, encodeRequest, eventsOfService, FrameType, type Logger } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import mqtt from 'mqtt-packet'
import { BACK_PRESSURE_SITE_DOC, PAYLOAD_BYTES, QUEUE_EVENTS } from './support/back-pressure-site.js'
import { startBrokerProcess, startFixture, type Proc } from './support/processes.js'

const SITE_DOC = BACK_PRESSURE_SITE_DOC
const GUESTS = 500
const HEAVY_USERS = 5
const SUBS_PER_USER = 1000
/** The targets for this scenario. */
const MAX_RSS_BYTES = 600e6
const MAX_GOOD_CLIENT_MS = 1000

function rssOf (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? 0 : Number(m[1]) * 1024
}

/** A raw MQTT client of user "u": subscribes `subs` times to "feed" from position 0, then pauses its socket. */
interface RawClient {
  readonly socket: Socket
  /** Positions received per subscription id. */
  readonly got: Map<number, number[]>
  closed: boolean
}

async function rawClient (port: number, clientName: string, subs: number): Promise<RawClient> {
  const key = clientKey('u', clientName)
  const socket = connect({ port, host: '127.0.0.1' })
  const parser = mqtt.parser({ protocolVersion: 4 })
  const c: RawClient = { socket, got: new Map(), closed: false }
  socket.on('data', (d: Buffer) => { parser.parse(d) })
  socket.on('error', () => {})
  socket.on('close', () => { c.closed = true })
  await new Promise<void>((resolve, reject) => {
    parser.on('packet', (p) => {
      if (p.cmd === 'connack' && p.returnCode !== 0) reject(new Error(`CONNACK ${p.returnCode}`))
      if (p.cmd === 'suback') resolve()
      if (p.cmd === 'publish') {
        const payload = p.payload as Buffer
        if (payload[0] !== FrameType.EVENTS) return
        const frame = decodeEvents(payload, () => 'feed')
        if (frame === null) return
        const list = c.got.get(frame.sub) ?? []
        for (const e of frame.events) list.push(e.position)
        c.got.set(frame.sub, list)
      }
    })
    socket.write(mqtt.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: clientClientId(key), username: 'u', password: Buffer.from('u-password') }))
    socket.write(mqtt.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: clientMessageTopic(key), qos: 0 }] }))
  })
  socket.pause()
  for (let i = 1; i <= subs; i++) {
    const req = encodeRequest({ op: 'sub', sub: i, event: 'feed', services: null, position: 0, start: 'all', window: 10_000 })
    socket.write(mqtt.generate({ cmd: 'publish', topic: clientRequestTopic(key), payload: Buffer.from(req), qos: 0, retain: false, dup: false }))
  }
  return c
}

describe('back-pressure', () => {
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.reverse()) await c().catch(() => {})
    closers.length = 0
  })

  async function fill (url: string, site: Awaited<ReturnType<typeof parseSite>>): Promise<ServiceEndpoint> {
    const svc = new ServiceEndpoint({ url, serviceId: 'svc', secret: 'svc-secret-1', events: eventsOfService(site, 'svc'), reconnectInitialMs: 20, reconnectMaxMs: 200 }).start()
    closers.push(() => svc.close())
    const payload = Buffer.alloc(PAYLOAD_BYTES, 7)
    await Promise.all(Array.from({ length: QUEUE_EVENTS }, () => svc.raise('feed', payload)))
    await svc.drained()
    return svc
  }

  it('500 never-reading guests and 5 x 1,000 never-reading subscriptions leave the broker small and a good client fast', async () => {
    const dir = await tempDir('herald-bp-')
    closers.push(dir.remove)
    const sitePath = join(dir.path, 'site.json')
    await writeFile(sitePath, JSON.stringify(SITE_DOC))
    const site = await parseSite(SITE_DOC)
    // every other limit at its default; this one shows that the CLI flags reach the broker
    const guestWindow = 50
    const broker = await startBrokerProcess(sitePath, join(dir.path, 'data'), 0, ['--guest-max-window', String(guestWindow)])
    closers.push(() => broker.proc.kill())
    const pid = broker.proc.child.pid as number
    const started = performance.now()
    const note = (what: string): void => { process.stdout.write(`back-pressure: ${what} after ${((performance.now() - started) / 1000).toFixed(1)} s, broker RSS ${(rssOf(pid) / 1e6).toFixed(0)} MB\n`) }
    const svc = await fill(broker.url, site)
    note('queue filled')

    let peak = rssOf(pid)
    const sampler = setInterval(() => { peak = Math.max(peak, rssOf(pid)) }, 20)
    closers.push(async () => { clearInterval(sampler) })

    const slow: Proc = startFixture('slow-readers.mjs', {
      port: broker.port,
      event: 'feed',
      window: 10_000,
      guests: GUESTS,
      // spread over source addresses, so that a per-address connection limit does not refuse them
      hosts: 50,
      users: Array.from({ length: HEAVY_USERS }, (_, i) => ({ user: 'u', password: 'u-password', clientName: `heavy-${i}` })),
      subsPerUser: SUBS_PER_USER
    }, { stdin: true })
    closers.push(() => slow.kill())
    await slow.waitLine((l) => l === `ready ${GUESTS + HEAVY_USERS} ${GUESTS + HEAVY_USERS * SUBS_PER_USER}`, 60_000)
    note('slow readers connected')

    // a well-behaved client, while they are all connected: connect, subscribe, receive a live event
    const t0 = performance.now()
    const good = new ClientEndpoint({ url: broker.url, clientName: 'good', user: 'u', password: 'u-password' }).start()
    closers.push(() => good.close())
    let receivedAt = 0
    let subscribed = false
    void good.subscribe('live', { start: 'new' }, () => { receivedAt = performance.now() }).then(() => { subscribed = true })
    await waitFor(() => subscribed, 'the good client subscribed', 30_000)
    await svc.raise('live', { hello: 1 })
    await waitFor(() => receivedAt > 0, 'the live event', 30_000)
    const goodMs = receivedAt - t0
    note(`good client done in ${goodMs.toFixed(0)} ms`)

    // the broker keeps delivering to the others meanwhile: watch its memory a little longer
    const watchUntil = performance.now() + 2000
    await waitFor(() => performance.now() >= watchUntil, 'the end of the observation', 10_000, 50)
    clearInterval(sampler)
    peak = Math.max(peak, rssOf(pid))

    // a slow reader hurts only itself: the first guest reads again and gets its window, in order
    slow.child.stdin!.write(`resume ${guestWindow}\n`)
    await slow.waitLine((l) => l.startsWith('resumed ') || l.startsWith('out of order'), 30_000)

    process.stdout.write(`back-pressure: broker peak RSS ${(peak / 1e6).toFixed(0)} MB, good client ${goodMs.toFixed(0)} ms\n`)
    expect(slow.lines).toContain(`resumed ${guestWindow}`)
    expect(peak).toBeLessThan(MAX_RSS_BYTES)
    expect(goodMs).toBeLessThan(MAX_GOOD_CLIENT_MS)
  }, 180_000)

  it('a connection above its bound waits and, once it reads, gets every event in order; one that never reads is closed after the timeout, logged and counted', async () => {
    const dir = await tempDir('herald-bp-')
    closers.push(dir.remove)
    const site = await parseSite(SITE_DOC)
    const warnings: Array<{ msg: string, blockedMs?: number }> = []
    const logger: Logger = { debug: () => {}, info: () => {}, error: () => {}, warn: (o, msg) => { warnings.push({ ...o, msg: msg ?? '' }) } }
    const timeoutMs = 3000
    const server = await startBrokerServer({ site, dataDir: join(dir.path, 'data'), port: 0, logger, maxConnectionQueuedBytes: 64 * 1024, slowConnectionTimeoutMs: timeoutMs })
    closers.push(() => server.close())
    await fill(server.url, site)
    const port = server.listener.address.port
    // 4 subscriptions x 5 MiB: far more than the socket buffers of both ends hold
    const subs = 4
    const reader = await rawClient(port, 'reader', subs)
    const stuck = await rawClient(port, 'stuck', subs)
    closers.push(async () => { reader.socket.destroy(); stuck.socket.destroy() })
    await waitFor(() => server.broker.stats().blockedConnections === 2, 'both connections blocked')

    // the reader reads again: it drains, the broker goes on, and every subscription gets everything
    reader.socket.resume()
    const all = Array.from({ length: QUEUE_EVENTS }, (_, i) => i + 1)
    await waitFor(() => [...reader.got.values()].reduce((n, l) => n + l.length, 0) >= subs * QUEUE_EVENTS, 'every event on every subscription', 60_000)
    expect([...reader.got.keys()].sort()).toEqual([1, 2, 3, 4])
    for (const positions of reader.got.values()) expect(positions).toEqual(all)

    // the other never does: closed after the timeout, not before, with a log line and a count
    await waitFor(() => server.broker.stats().slowConnectionsClosed > 0, 'a slow connection closed', 60_000)
    // the paused socket sees the end once it reads what was already sent
    stuck.socket.resume()
    await waitFor(() => stuck.closed, 'the stuck connection closed', 30_000)
    expect(reader.closed).toBe(false)
    expect(server.broker.stats().slowConnectionsClosed).toBe(1)
    const logged = warnings.filter((w) => w.msg.includes('has not read its socket'))
    expect(logged).toHaveLength(1)
    expect(logged[0]?.blockedMs).toBeGreaterThanOrEqual(timeoutMs)
  }, 120_000)
})

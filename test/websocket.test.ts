/**
 * MQTT over WebSocket end to end ([CONN-WS-1..5]): a real `herald broker --ws-port` process serving
 * TCP (or TLS) and WebSocket (or wss://) at once, a service endpoint over TCP, client endpoints over
 * ws:// and wss://; and WebSocket clients that never read, which must cost the broker a bounded
 * amount of memory and be closed like TCP ones while others are served.
 */
import { spawn } from 'node:child_process'
import { copyFile, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerServer } from '@herald/broker'
import { RawWsMqtt } from '@herald/broker/testing'
import { ClientEndpoint } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { AuthError, ErrorCode, clientClientId, clientKey, clientMessageTopic, clientRequestTopic, decodeEvents, encodeRequest, eventsOfService, FrameType, type HeraldError, type Logger } from '@herald/protocol'
import { parseSite, readTlsClientFiles, type TlsClientOptions } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { makeTestCa, tempDir, type CertFiles, type TestCa } from '@herald/node-runtime/testing'
import { BACK_PRESSURE_SITE_DOC, PAYLOAD_BYTES, QUEUE_EVENTS } from './support/back-pressure-site.js'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { Proc, writeTestSite } from './support/processes.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

let pki: { path: string, remove: () => Promise<void> }
let ca: TestCa
let otherCa: TestCa
let server: CertFiles
beforeAll(async () => {
  pki = await tempDir('herald-ws-pki-')
  ca = await makeTestCa(pki.path, 'ca')
  otherCa = await makeTestCa(pki.path, 'other-ca')
  server = await ca.issueServer('server')
})
afterAll(async () => { await pki.remove() })

describe('MQTT over WebSocket with a real herald broker', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  /** Runs `herald broker` with `args`, waits for both of its listening lines; returns the TCP and WebSocket URLs. */
  async function broker (args: readonly string[], site?: string): Promise<{ proc: Proc, url: string, wsUrl: string }> {
    const child = spawn(process.execPath, [CLI, 'broker', '--site', site ?? await writeTestSite(h.dir), '--data', join(h.dir, 'broker'), '--port', '0', '--ws-port', '0', '--log-level', 'warn', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    const proc = new Proc(child, 'herald broker')
    h.onClose(() => proc.kill())
    const prefix = 'herald broker listening on '
    const url = (await proc.waitLine((l) => l.startsWith(prefix) && /^mqtts?:/.test(l.slice(prefix.length)))).slice(prefix.length)
    const wsUrl = (await proc.waitLine((l) => l.startsWith(prefix) && /^wss?:/.test(l.slice(prefix.length)))).slice(prefix.length)
    return { proc, url, wsUrl }
  }

  it('serves TCP and ws:// at once: a service over TCP raises, clients over ws:// get every event once, in order; a wrong password is an AuthError', async () => {
    h = await Harness.create()
    const b = await broker([])
    expect(b.url).toMatch(/^mqtt:\/\/127\.0\.0\.1:\d+$/)
    expect(b.wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/)
    const wsPort = new URL(b.wsUrl).port
    const N = 300
    const svc = await h.service(b.url, 'svc-a')
    // with its path, and without (the usual /mqtt)
    const got = await collect(h.client(b.wsUrl, 'alice', 'ws-reader'), 'readings', { start: 'all' })
    const bare = await collect(h.client(`ws://localhost:${wsPort}`, 'bob', 'ws-bare'), 'readings', { start: 'all' })
    for (let i = 0; i < N; i++) await svc.raise('readings', { i })
    await got.until(N)
    await bare.until(N)
    const all = Array.from({ length: N }, (_, i) => ({ i }))
    expect(got.payloads()).toEqual(all)
    expect(bare.payloads()).toEqual(all)
    expect(got.events.every((e) => !e.redelivered)).toBe(true)
    await waitFor(() => svc.status.backlog === 0, 'the broker to acknowledge every event')

    const errors: HeraldError[] = []
    const wrong = h.client(b.wsUrl, 'alice', 'ws-wrong', { password: 'not-her-password' })
    wrong.on('error', (e) => { errors.push(e) })
    await waitFor(() => errors.length >= 1, 'an error event')
    expect(errors[0]).toBeInstanceOf(AuthError)
    expect(errors[0]?.code).toBe(ErrorCode.BAD_CREDENTIALS)
    expect(wrong.status.state).not.toBe('online')

    // a wrong path: refused before the upgrade, and the client says where to look
    const lost = h.client(`ws://127.0.0.1:${wsPort}/other`, 'alice', 'ws-lost')
    await waitFor(() => lost.status.lastError !== null, 'the client to report why it cannot connect')
    expect(lost.status.lastError?.message).toMatch(/MQTT over WebSocket .*\/mqtt/)
    expect(got.events).toHaveLength(N)
  })

  it('a busy --ws-port stops a second broker with one line naming the flag, exit code 2', async () => {
    h = await Harness.create()
    const b = await broker([])
    const wsPort = new URL(b.wsUrl).port
    const child = spawn(process.execPath, [CLI, 'broker', '--site', await writeTestSite(h.dir), '--data', join(h.dir, 'second'), '--port', '0', '--ws-port', wsPort], { stdio: ['ignore', 'pipe', 'pipe'] })
    const second = new Proc(child, 'second herald broker')
    h.onClose(() => second.kill())
    expect(await second.exited).toBe(2)
    expect(second.stderr).toBe(`herald: WebSocket port ${wsPort} on 127.0.0.1 is in use (another broker running?): choose another with --ws-port [ADDRESS_IN_USE]\n`)
  })

  it('serves wss:// with the TLS certificate (reloaded on SIGHUP): a client trusting the CA receives, one trusting another CA is refused with a reason', async () => {
    h = await Harness.create()
    const live = { certFile: join(h.dir, 'live.crt'), keyFile: join(h.dir, 'live.key') }
    await copyFile(server.certFile, live.certFile)
    await copyFile(server.keyFile, live.keyFile)
    const b = await broker(['--tls-cert', live.certFile, '--tls-key', live.keyFile])
    expect(b.wsUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/mqtt$/)
    const trust: TlsClientOptions = readTlsClientFiles({ ca: ca.certFile })
    const wssLocal = b.wsUrl.replace('127.0.0.1', 'localhost')

    const svc = await h.service(b.url, 'svc-a', { tls: trust })
    const got = await collect(h.client(wssLocal, 'alice', 'wss-reader', { tls: trust }), 'readings', { start: 'all' })
    await svc.raise('readings', { n: 1 })
    await got.until(1)
    expect(got.payloads()).toEqual([{ n: 1 }])

    const stranger = h.client(wssLocal, 'alice', 'wss-stranger', { tls: readTlsClientFiles({ ca: otherCa.certFile }) })
    await waitFor(() => stranger.status.lastError !== null, 'the client to report why it cannot connect')
    expect(stranger.status.lastError?.message).toMatch(/^TLS: the broker's certificate was refused: .*check the CA/)
    expect(stranger.status.state).not.toBe('online')
    // tls.servername is checked over wss:// too: a name the certificate does not carry is refused
    const misnamed = h.client(b.wsUrl, 'alice', 'wss-misnamed', { tls: { ...trust, servername: 'elsewhere.example' } })
    await waitFor(() => misnamed.status.lastError !== null, 'the client to report why it cannot connect')
    expect(misnamed.status.lastError?.message).toMatch(/^TLS: the broker's certificate was refused: .*ERR_TLS_CERT_ALTNAME_INVALID/)

    // a renewed certificate on SIGHUP: new wss:// connections get it, the open one stays
    const port = Number(new URL(b.wsUrl).port)
    const fingerprint = (): Promise<string> => new Promise((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port, ca: trust.ca as Buffer }, () => {
        resolve(s.getPeerCertificate().fingerprint256)
        s.destroy()
      })
      s.once('error', reject)
    })
    const before = await fingerprint()
    const renewed = await ca.issueServer('renewed')
    await copyFile(renewed.certFile, live.certFile)
    await copyFile(renewed.keyFile, live.keyFile)
    b.proc.child.kill('SIGHUP')
    await b.proc.waitLine((l) => l === 'herald broker reloaded its TLS certificate', 30_000)
    expect(await fingerprint()).not.toBe(before)
    await svc.raise('readings', { n: 2 })
    await got.until(2)
    expect(got.events.map((e) => e.redelivered)).toEqual([false, false])
  })
})

describe('back-pressure over WebSocket', () => {
  const SITE_DOC = BACK_PRESSURE_SITE_DOC
  /** The issue's target for the TCP scenario (test/back-pressure.test.ts), and the growth above the broker's size once its queue is filled. */
  const MAX_RSS_BYTES = 600e6
  const MAX_RSS_GROWTH_BYTES = 160e6
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.reverse()) await c().catch(() => {})
    closers.length = 0
  })

  async function fill (url: string): Promise<ServiceEndpoint> {
    const site = await parseSite(SITE_DOC)
    const svc = new ServiceEndpoint({ url, serviceId: 'svc', secret: 'svc-secret-1', events: eventsOfService(site, 'svc'), reconnectInitialMs: 20, reconnectMaxMs: 200 }).start()
    closers.push(() => svc.close())
    const payload = Buffer.alloc(PAYLOAD_BYTES, 7)
    await Promise.all(Array.from({ length: QUEUE_EVENTS }, () => svc.raise('feed', payload)))
    await svc.drained()
    return svc
  }

  /** A raw WebSocket client (a guest, or user "u"): subscribes `subs` times to "feed" from position 0, then stops reading. */
  async function wsReader (url: string, clientName: string, subs: number, localAddress: string, user = false): Promise<{ c: RawWsMqtt, got: Map<number, number[]>, closed: () => boolean }> {
    const key = clientKey(user ? 'u' : null, clientName)
    const c = new RawWsMqtt({ url, localAddress, connect: { clientId: clientClientId(key), keepalive: 0, ...(user ? { username: 'u', password: Buffer.from('u-password') } : {}) } })
    closers.push(async () => { c.destroy() })
    let closed = false
    void c.closed.then(() => { closed = true })
    const got = new Map<number, number[]>()
    c.onPacket = (p) => {
      if (p.cmd !== 'publish') return
      c.packets.length = 0
      const payload = p.payload as Buffer
      if (payload[0] !== FrameType.EVENTS) return
      const frame = decodeEvents(payload, () => 'feed')
      if (frame === null) return
      const list = got.get(frame.sub) ?? []
      for (const e of frame.events) list.push(e.position)
      got.set(frame.sub, list)
    }
    expect(await c.connack).toBe(0)
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: clientMessageTopic(key), qos: 0 }] })
    await waitFor(() => c.packets.some((p) => p.cmd === 'suback'), 'SUBACK')
    c.ws.pause()
    for (let i = 1; i <= subs; i++) {
      c.send({ cmd: 'publish', topic: clientRequestTopic(key), payload: Buffer.from(encodeRequest({ op: 'sub', sub: i, event: 'feed', services: null, position: 0, start: 'all', window: 10_000 })), qos: 0, retain: false, dup: false })
    }
    return { c, got, closed: () => closed }
  }

  it('a WebSocket connection above its bound waits and, once it reads, gets every event in order; one that never reads is closed after the timeout; a ws client meanwhile is served', async () => {
    const dir = await tempDir('herald-ws-bp-')
    closers.push(dir.remove)
    const warnings: string[] = []
    const logger: Logger = { debug: () => {}, info: () => {}, error: () => {}, warn: (_o, msg) => { warnings.push(msg ?? '') } }
    const timeoutMs = 3000
    const s = await startBrokerServer({ site: await parseSite(SITE_DOC), dataDir: join(dir.path, 'data'), port: 0, webSocket: { port: 0 }, logger, maxConnectionQueuedBytes: 64 * 1024, slowConnectionTimeoutMs: timeoutMs })
    closers.push(() => s.close())
    const svc = await fill(s.url)
    const wsUrl = s.webSocketUrl!
    const subs = 4
    const reader = await wsReader(wsUrl, 'reader', subs, '127.0.30.1', true)
    const stuck = await wsReader(wsUrl, 'stuck', subs, '127.0.30.2', true)
    await waitFor(() => s.broker.stats().blockedConnections === 2, 'both WebSocket connections blocked', 60_000)

    // another client over WebSocket is served meanwhile
    const good = new ClientEndpoint({ url: wsUrl, clientName: 'good', user: 'u', password: 'u-password' }).start()
    closers.push(() => good.close())
    let live = 0
    await good.subscribe('live', { start: 'new' }, () => { live++ })
    await svc.raise('live', { hello: 1 })
    await waitFor(() => live === 1, 'the live event over ws://', 30_000)

    reader.c.ws.resume()
    const all = Array.from({ length: QUEUE_EVENTS }, (_, i) => i + 1)
    await waitFor(() => [...reader.got.values()].reduce((n, l) => n + l.length, 0) >= subs * QUEUE_EVENTS, 'every event on every subscription', 60_000)
    expect([...reader.got.keys()].sort()).toEqual([1, 2, 3, 4])
    for (const positions of reader.got.values()) expect(positions).toEqual(all)

    await waitFor(() => s.broker.stats().slowConnectionsClosed > 0, 'a slow connection closed', 60_000)
    stuck.c.ws.resume()
    await waitFor(() => stuck.closed(), 'the stuck connection closed', 30_000)
    expect(reader.closed()).toBe(false)
    expect(s.broker.stats().slowConnectionsClosed).toBe(1)
    expect(warnings.filter((w) => w.includes('has not read its socket'))).toHaveLength(1)
  }, 120_000)

  it('200 never-reading WebSocket guests and 5 x 1,000 never-reading subscriptions leave a herald broker process small and a ws client fast', async () => {
    const dir = await tempDir('herald-ws-bp-')
    closers.push(dir.remove)
    const sitePath = join(dir.path, 'site.json')
    await writeFile(sitePath, JSON.stringify(SITE_DOC))
    const child = spawn(process.execPath, [CLI, 'broker', '--site', sitePath, '--data', join(dir.path, 'data'), '--port', '0', '--ws-port', '0', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const proc = new Proc(child, 'herald broker')
    closers.push(() => proc.kill())
    const prefix = 'herald broker listening on '
    const url = (await proc.waitLine((l) => l.startsWith(`${prefix}mqtt:`))).slice(prefix.length)
    const wsUrl = (await proc.waitLine((l) => l.startsWith(`${prefix}ws:`))).slice(prefix.length)
    const rss = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
    const svc = await fill(url)
    const baseline = rss()
    let peak = baseline
    const sampler = setInterval(() => { peak = Math.max(peak, rss()) }, 20)
    closers.push(async () => { clearInterval(sampler) })

    const GUESTS = 200
    const HEAVY_USERS = 5
    const readers = []
    // a few at a time, from 40 source addresses (guests per address are limited)
    for (let i = 0; i < GUESTS; i += 40) {
      readers.push(...await Promise.all(Array.from({ length: 40 }, (_, j) => wsReader(wsUrl, `slow-${i + j}`, 1, `127.0.31.${1 + j}`))))
    }
    // and users with 1,000 subscriptions of a 10,000-event window each, far more than any socket holds
    const heavy = await Promise.all(Array.from({ length: HEAVY_USERS }, (_, i) => wsReader(wsUrl, `heavy-${i}`, 1000, `127.0.32.${1 + i}`, true)))
    const t0 = performance.now()
    const good = new ClientEndpoint({ url: wsUrl, clientName: 'good', user: 'u', password: 'u-password' }).start()
    closers.push(() => good.close())
    let receivedAt = 0
    await good.subscribe('live', { start: 'new' }, () => { receivedAt = performance.now() })
    await svc.raise('live', { hello: 1 })
    await waitFor(() => receivedAt > 0, 'the live event', 30_000)
    const goodMs = receivedAt - t0
    clearInterval(sampler)
    peak = Math.max(peak, rss())
    process.stdout.write(`websocket back-pressure: broker RSS ${(baseline / 1e6).toFixed(0)} MB before, peak ${(peak / 1e6).toFixed(0)} MB with ${GUESTS} never-reading ws guests; good ws client ${goodMs.toFixed(0)} ms\n`)
    // none of them was closed meanwhile, and the first one reads its window in order when it reads again
    expect([...readers, ...heavy].filter((r) => r.closed())).toHaveLength(0)
    const first = readers[0]!
    first.c.ws.resume()
    await waitFor(() => (first.got.get(1)?.length ?? 0) >= 100, 'the first guest\'s window', 30_000)
    expect(first.got.get(1)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
    expect(peak).toBeLessThan(MAX_RSS_BYTES)
    // measured: about 80 MB with back-pressure, about 230 MB when a write's callback does not wait for the socket
    expect(peak - baseline).toBeLessThan(MAX_RSS_GROWTH_BYTES)
    expect(goodMs).toBeLessThan(1000)
  }, 180_000)
})

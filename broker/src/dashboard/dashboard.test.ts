/**
 * The dashboard's HTTP side against a real broker (memory store) and a real metrics listener:
 * login through the broker's throttle, refusals, CSRF checks, body bounds, the feed's bounds, and
 * the site reload hook ([OPS-DASH-1..8]).
 */
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, PayloadKind, encodeUp, serviceUpTopic, utf8Encode, type Site, type UpEvent } from '@herald/protocol'
import { parseSite, startMetricsServer, type MetricsServer } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { createBroker, type Broker, type BrokerOptions } from '../broker.js'
import { MemoryEventStore } from '../event-store/memory-event-store.js'
import { listenTcp, type TcpListener } from '../listeners/tcp-listener.js'
import { RawMqtt } from '../testing/raw-mqtt.js'
import { Dashboard, LOGIN_REFUSED, type DashboardOptions } from './dashboard.js'

let site: Promise<Site> | null = null
const testSite = (): Promise<Site> => {
  site ??= parseSite({
    admin: { roles: ['operator'] },
    events: [{ name: 'readings', category: 'queueing', lifetime: '1d', maxQueueSize: 100_000, access: 'everyone' }, { name: 'other', category: 'queueing', lifetime: '1d', maxQueueSize: 1000, access: 'everyone' }],
    services: [{ id: 'svc', secret: 'svc-secret-1', events: ['readings', 'other'] }],
    users: [{ name: 'alice', password: 'alice-password', roles: ['operator'] }, { name: 'bob', password: 'bob-password', roles: ['viewer'] }]
  })
  return site
}

interface Running { broker: Broker, listener: TcpListener, server: MetricsServer, dashboard: Dashboard, origin: string, mqttPort: number }
let running: Running | null = null
const sockets: Array<Socket | RawMqtt> = []
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy()
  if (running !== null) {
    running.dashboard.close()
    await running.server.close()
    await running.listener.close()
    await running.broker.close()
  }
  running = null
})

async function start (options: Partial<DashboardOptions> = {}, brokerOptions: Partial<BrokerOptions> = {}, wrap: (b: Broker) => Broker = (b) => b): Promise<Running> {
  const s = await testSite()
  const broker = await createBroker({ site: s, store: new MemoryEventStore({ limitsOf: (n) => s.events.get(n) }), ...brokerOptions })
  const listener = await listenTcp(broker, { port: 0 })
  const dashboard = await Dashboard.create({ broker: wrap(broker), secure: false, ...options })
  const server = await startMetricsServer({ port: 0, metrics: async () => ({ contentType: 'text/plain', body: '' }), ready: () => null, handler: (req, res) => dashboard.handle(req, res) })
  running = { broker, listener, server, dashboard, origin: server.url, mqttPort: listener.address.port }
  return running
}

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/** One HTTP request; `origin: true` sends the page's own Origin. */
function call (r: Running, method: string, path: string, options: { body?: string | Buffer, headers?: Record<string, string>, origin?: string | false } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}), ...options.headers }
    if (options.origin !== false) headers.origin = options.origin ?? r.origin
    const req = request(`${r.origin}${path}`, { method, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }) })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

const login = (r: Running, user: string, password: string, address?: string): Promise<Answer> =>
  call(r, 'POST', '/admin/login', { body: JSON.stringify({ user, password }), ...(address !== undefined ? { headers: {} } : {}) })

function errorOf (a: Answer): string {
  return (JSON.parse(a.body) as { error: string }).error
}

function cookie (a: Answer): string {
  const c = (a.headers['set-cookie'] as string[] | undefined)?.[0] ?? ''
  return c.split(';')[0] as string
}

async function adminCookie (r: Running): Promise<string> {
  const a = await login(r, 'alice', 'alice-password')
  expect(a.status).toBe(200)
  return cookie(a)
}

/** Raises `n` readings (payloads of `bytes`) through a raw service connection and waits until stored. */
async function raise (r: Running, n: number, bytes = 64, name = 'readings'): Promise<void> {
  const svc = new RawMqtt({ port: r.mqttPort, connect: { clientId: 's/svc', username: 'svc', password: Buffer.from('svc-secret-1') } })
  sockets.push(svc)
  expect(await svc.connack).toBe(0)
  const before = r.broker.stats().storedEvents
  const events: UpEvent[] = []
  for (let i = 1; i <= n; i++) {
    events.push({ seq: i, name, category: 'queueing', raisedAt: Date.now(), isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: utf8Encode(JSON.stringify('x'.repeat(bytes))), age: 0 })
  }
  svc.send({ cmd: 'publish', topic: serviceUpTopic('svc'), payload: Buffer.from(encodeUp({ instance: `i-${name}`, after: 0, events })), qos: 0, retain: false, dup: false })
  await waitFor(() => r.broker.stats().storedEvents >= before + n, `r.broker.stats().storedEvents >= before + n`, 20_000)
  svc.destroy()
}

/** Opens a feed; resolves to its parsed messages so far (live array) and the response. */
async function openFeed (r: Running, c: string, query = ''): Promise<{ messages: Array<Record<string, unknown>>, status: number, close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = request(`${r.origin}/admin/feed${query}`, { headers: { cookie: c } }, (res) => {
      const messages: Array<Record<string, unknown>> = []
      let buf = ''
      res.setEncoding('utf8')
      res.on('data', (s: string) => {
        buf += s
        let i
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const m = buf.slice(0, i)
          buf = buf.slice(i + 2)
          if (m.startsWith('data: ')) messages.push(JSON.parse(m.slice(6)) as Record<string, unknown>)
        }
      })
      res.on('error', () => { /* closed */ })
      resolve({ messages, status: res.statusCode ?? 0, close: () => { req.destroy() } })
    })
    req.on('error', reject)
    req.end()
  })
}

describe('dashboard login [OPS-DASH-2]', () => {
  it('refuses an unknown user and a wrong password with the same message, a non-admin with its own, and logs an admin in with an HttpOnly SameSite=Strict cookie', async () => {
    const r = await start()
    const unknown = await login(r, 'mallory', 'whatever-password')
    const wrong = await login(r, 'alice', 'not-her-password')
    expect([unknown.status, wrong.status]).toEqual([401, 401])
    expect(JSON.parse(unknown.body)).toEqual({ error: LOGIN_REFUSED })
    expect(unknown.body).toBe(wrong.body)
    expect(unknown.headers['set-cookie']).toBeUndefined()
    const bob = await login(r, 'bob', 'bob-password')
    expect(bob.status).toBe(403)
    expect(errorOf(bob)).toMatch(/bob has no admin role/)
    expect(bob.headers['set-cookie']).toBeUndefined()
    const ok = await login(r, 'alice', 'alice-password')
    expect(ok.status).toBe(200)
    const setCookie = (ok.headers['set-cookie'] as string[])[0] as string
    expect(setCookie).toMatch(/^herald_admin=[A-Za-z0-9_-]{43}; Path=\/admin; HttpOnly; SameSite=Strict; Max-Age=\d+$/)
    const me = await call(r, 'GET', '/admin/session', { headers: { cookie: cookie(ok) } })
    expect(JSON.parse(me.body)).toEqual({ user: 'alice', reload: false })
    // every one of these went through the broker's login throttle: one secret check each
    expect(r.broker.stats().logins).toMatchObject({ checks: 4, failed: 2, succeeded: 2 })
  })

  it('goes through the broker\'s login throttle: past the failure budget an attempt is refused unchecked, even with the right password', async () => {
    const r = await start({}, { loginFailuresPerAddress: 3, loginFailureDecayMs: 600_000 })
    for (let i = 0; i < 3; i++) expect((await login(r, 'alice', `wrong-${i}`)).status).toBe(401)
    const checks = r.broker.stats().logins.checks
    const refused = await login(r, 'alice', 'alice-password')
    expect(refused.status).toBe(429)
    expect(errorOf(refused)).toMatch(/too many failed logins/)
    expect(r.broker.stats().logins.checks).toBe(checks)
    expect(r.broker.stats().logins.throttled).toBeGreaterThan(0)
  })

  it('ends the sessions and feeds of a user who is no longer an admin (a site reload took the role away)', async () => {
    let admins = new Set(['alice'])
    const r = await start({ sampleIntervalMs: 50 }, {}, (b) => ({ ...b, isAdminUser: (name: string) => admins.has(name) }))
    const c = await adminCookie(r)
    const feed = await openFeed(r, c)
    await waitFor(() => feed.messages.length >= 2, 'two feed messages', 20_000)
    admins = new Set()
    await waitFor(() => r.dashboard.feedCount === 0, 'the feed closed', 20_000)
    expect((await call(r, 'GET', '/admin/session', { headers: { cookie: c } })).status).toBe(401)
    admins = new Set(['alice'])
    // the session is gone for good: a new login is needed
    expect((await call(r, 'GET', '/admin/session', { headers: { cookie: c } })).status).toBe(401)
    feed.close()
  })

  it('ends the session on logout: the cookie no longer opens the session or the feed', async () => {
    const r = await start()
    const c = await adminCookie(r)
    expect((await call(r, 'GET', '/admin/session', { headers: { cookie: c } })).status).toBe(200)
    const out = await call(r, 'POST', '/admin/logout', { body: '{}', headers: { cookie: c } })
    expect(out.status).toBe(200)
    expect((out.headers['set-cookie'] as string[])[0]).toMatch(/Max-Age=0/)
    expect((await call(r, 'GET', '/admin/session', { headers: { cookie: c } })).status).toBe(401)
    expect((await call(r, 'GET', '/admin/feed', { headers: { cookie: c } })).status).toBe(401)
  })
})

describe('dashboard requests [OPS-DASH-6]', () => {
  it('refuses a POST without the page\'s own Origin, from another site, or not JSON; bounds the body; keeps methods and paths strict', async () => {
    const r = await start({ maxBodyBytes: 256 })
    const body = JSON.stringify({ user: 'alice', password: 'alice-password' })
    expect((await call(r, 'POST', '/admin/login', { body, origin: false })).status).toBe(403)
    expect((await call(r, 'POST', '/admin/login', { body, origin: 'http://evil.example' })).status).toBe(403)
    expect((await call(r, 'POST', '/admin/login', { body, headers: { 'sec-fetch-site': 'cross-site' } })).status).toBe(403)
    expect((await call(r, 'POST', '/admin/login', { body, headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status).toBe(415)
    const big = await call(r, 'POST', '/admin/login', { body: JSON.stringify({ user: 'alice', password: 'x'.repeat(1000) }) })
    expect(big.status).toBe(413)
    expect(errorOf(big)).toBe('request body above 256 bytes')
    // a body without a length (chunked) is cut at the bound too
    const chunked = await call(r, 'POST', '/admin/login', { body: Buffer.alloc(10_000, 0x20), headers: { 'transfer-encoding': 'chunked' } })
    expect(chunked.status).toBe(413)
    expect((await call(r, 'POST', '/admin/login', { body: '{not json' })).status).toBe(400)
    expect((await call(r, 'POST', '/admin/login', { body: '{"user": 1}' })).status).toBe(400)
    const put = await call(r, 'PUT', '/admin/login', { body })
    expect(put.status).toBe(405)
    expect(put.headers.allow).toBe('POST')
    expect((await call(r, 'GET', '/admin/login')).status).toBe(405)
    expect((await call(r, 'GET', '/admin/nothing-here')).status).toBe(404)
    // no secret check was spent on any of these
    expect(r.broker.stats().logins.checks).toBe(0)
    const page = await call(r, 'GET', '/admin')
    expect(page.status).toBe(200)
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'; script-src 'self'/)
    expect(page.body).toMatch(/<script type="module" src="\/admin\/dashboard.js">/)
  })
})

describe('dashboard feed [OPS-DASH-5]', () => {
  it('sends the figures with history, the tail filtered at the server by event and service', async () => {
    const r = await start({ sampleIntervalMs: 50 })
    await raise(r, 5, 10, 'readings')
    await raise(r, 2, 10, 'other')
    const c = await adminCookie(r)
    const all = await openFeed(r, c)
    expect(all.status).toBe(200)
    await waitFor(() => all.messages.length >= 2, `all.messages.length >= 2`, 20_000)
    const first = all.messages[0] as { history: unknown[], tail: Array<{ event: string, service: string, preview: string }>, storedEvents: number, events: Array<{ name: string, stored: number | null, storedTotal: number }> }
    expect(Array.isArray(first.history)).toBe(true)
    expect(first.storedEvents).toBe(7)
    expect(first.tail.map((e) => e.event)).toEqual(['other', 'other', 'readings', 'readings', 'readings', 'readings', 'readings'])
    expect(first.tail[0]?.service).toBe('svc')
    expect(first.tail[0]?.preview).toBe(JSON.stringify('x'.repeat(10)))
    // stored now per name (the memory store counts them too), and in all since the broker started
    expect(first.events.find((e) => e.name === 'readings')).toMatchObject({ stored: 5, storedTotal: 5 })
    all.close()
    const filtered = await openFeed(r, c, '?event=readings')
    await waitFor(() => filtered.messages.length >= 1, `filtered.messages.length >= 1`, 20_000)
    const tail = (filtered.messages[0] as { tail: Array<{ event: string }> }).tail
    expect(tail.map((e) => e.event)).toEqual(['readings', 'readings', 'readings', 'readings', 'readings'])
    filtered.close()
    const none = await openFeed(r, c, '?service=nobody')
    await waitFor(() => none.messages.length >= 1, `none.messages.length >= 1`, 20_000)
    expect((none.messages[0] as { tail: unknown[] }).tail).toEqual([])
    none.close()
  })

  it('refuses feeds beyond maxFeeds, and takes one again when a page goes', async () => {
    const r = await start({ maxFeeds: 2, sampleIntervalMs: 50 })
    const c = await adminCookie(r)
    const a = await openFeed(r, c)
    const b = await openFeed(r, c)
    expect([a.status, b.status]).toEqual([200, 200])
    const third = await call(r, 'GET', '/admin/feed', { headers: { cookie: c } })
    expect(third.status).toBe(503)
    expect(errorOf(third)).toMatch(/too many dashboard feeds/)
    a.close()
    await waitFor(() => r.dashboard.feedCount === 1, `r.dashboard.feedCount === 1`, 20_000)
    const again = await openFeed(r, c)
    expect(again.status).toBe(200)
    again.close()
    b.close()
  })

  it('closes a feed whose page never reads, once its unsent bytes pass the bound, and keeps serving the others', async () => {
    const r = await start({ sampleIntervalMs: 20, maxFeedBufferedBytes: 16 * 1024, tailShown: 200 }, { tailPreviewBytes: 1024 })
    await raise(r, 200, 1000)
    const c = await adminCookie(r)
    // a raw socket that sends the request and never reads a byte
    const s = connect({ port: r.server.port, host: '127.0.0.1' })
    sockets.push(s)
    s.pause()
    const closed = new Promise<void>((resolve) => { s.once('close', () => { resolve() }) })
    s.on('error', () => { /* reset when the server drops it */ })
    s.write(`GET /admin/feed HTTP/1.1\r\nhost: 127.0.0.1\r\ncookie: ${c}\r\n\r\n`)
    await waitFor(() => r.dashboard.feedsDropped === 1, `r.dashboard.feedsDropped === 1`, 30_000)
    expect(r.dashboard.feedCount).toBe(0)
    s.resume()
    await closed
    const ok = await openFeed(r, c)
    await waitFor(() => ok.messages.length >= 2, `ok.messages.length >= 2`, 20_000)
    ok.close()
  })
})

describe('dashboard site reload [OPS-DASH-8]', () => {
  it('calls the injected reloadSite for an admin: 200 with its report, 400 with a ConfigError\'s message; 401 without a session, 403 cross-origin', async () => {
    let outcome: 'ok' | 'refused' = 'ok'
    let calls = 0
    const r = await start({
      reloadSite: async () => {
        calls++
        if (outcome === 'refused') throw new ConfigError('site file: event "x" changed its category')
        return { events: { added: ['new-one'] } }
      }
    })
    expect((await call(r, 'POST', '/admin/reload-site', { body: '{}' })).status).toBe(401)
    const c = await adminCookie(r)
    expect((await call(r, 'POST', '/admin/reload-site', { body: '{}', headers: { cookie: c }, origin: 'http://evil.example' })).status).toBe(403)
    expect(calls).toBe(0)
    const ok = await call(r, 'POST', '/admin/reload-site', { body: '{}', headers: { cookie: c } })
    expect(ok.status).toBe(200)
    expect(JSON.parse(ok.body)).toEqual({ events: { added: ['new-one'] } })
    outcome = 'refused'
    const bad = await call(r, 'POST', '/admin/reload-site', { body: '{}', headers: { cookie: c } })
    expect(bad.status).toBe(400)
    expect(JSON.parse(bad.body)).toEqual({ error: 'site file: event "x" changed its category' })
    expect(calls).toBe(2)
  })

  it('answers 501 when the broker has no reload callback', async () => {
    const r = await start()
    const c = await adminCookie(r)
    const res = await call(r, 'POST', '/admin/reload-site', { body: '{}', headers: { cookie: c } })
    expect(res.status).toBe(501)
  })
})

/**
 * The broker's live dashboard ([OPS-DASH-1..8] in docs/metrics.md), served under `/admin` on the
 * metrics listener: a page (broker/web), an admin login through the broker's login throttle, a
 * Server-Sent Events feed of the broker's figures once a second, and the site reload button.
 * Everything is bounded: request bodies, sessions, feeds, a feed's unsent bytes, the history and the
 * tail. With no page open, the broker pays only the tail's O(1) push per event and one stats() call
 * per second for the history.
 */
import { readFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { fileURLToPath } from 'node:url'
import { ConfigError, checkInt, silentLogger, withDefaults, type Logger } from '@herald/protocol'
import type { Broker, BrokerStats } from '../broker.js'
import { AdminSessions } from './admin-sessions.js'
import { GatewayScraper, type GatewayView } from './gateway-scraper.js'

export interface DashboardOptions {
  readonly broker: Broker
  /** The listener serves HTTPS: the session cookie gets `Secure`. */
  readonly secure: boolean
  /**
   * Re-reads the site file ([OPS-DASH-8]): resolves to a report (sent as JSON), or rejects, with a
   * ConfigError naming why the new site was refused (400). Without it, `POST /admin/reload-site` is 501.
   */
  readonly reloadSite?: (() => Promise<unknown>) | undefined
  /** Metrics URLs of gateways to show ([OPS-DASH-7]). */
  readonly gateways?: readonly string[] | undefined
  /** How often gateways are scraped, in ms. Default 5,000. */
  readonly gatewayIntervalMs?: number | undefined
  /** Timeout of one gateway scrape, in ms. Default 2,000. */
  readonly gatewayTimeoutMs?: number | undefined
  /** Largest gateway metrics body, in bytes. Default 1 MiB. */
  readonly gatewayMaxBytes?: number | undefined
  /** Most login sessions. Default 32. */
  readonly maxSessions?: number | undefined
  /** A session unused this long ends, in ms. Default 30 min. */
  readonly sessionIdleMs?: number | undefined
  /** Most feeds (open pages) at once; more get 503. Default 4. */
  readonly maxFeeds?: number | undefined
  /** A feed with more unsent bytes than this (a page that does not read) is closed. Default 1 MiB. */
  readonly maxFeedBufferedBytes?: number | undefined
  /** How often figures are sampled and sent, in ms. Default 1,000. */
  readonly sampleIntervalMs?: number | undefined
  /** Samples kept for the charts (a fresh page gets them). Default 300 (5 min at 1 s). */
  readonly historySamples?: number | undefined
  /** Tail events sent per sample (after the filter). Default 100. */
  readonly tailShown?: number | undefined
  /** Client sessions listed per sample. Default 200. */
  readonly clientsShown?: number | undefined
  /** Largest POST body, in bytes. Default 4,096. */
  readonly maxBodyBytes?: number | undefined
  readonly logger?: Logger | undefined
}

export const DASHBOARD_DEFAULTS = Object.freeze({
  maxSessions: 32,
  sessionIdleMs: 30 * 60_000,
  maxFeeds: 4,
  maxFeedBufferedBytes: 1024 * 1024,
  sampleIntervalMs: 1000,
  historySamples: 300,
  tailShown: 100,
  clientsShown: 200,
  maxBodyBytes: 4096
})

/** The path prefix of everything the dashboard serves. */
export const DASHBOARD_PATH = '/admin'

const COOKIE = 'herald_admin'
const WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url))
const FILES: Readonly<Record<string, { file: string, type: string }>> = {
  '/admin': { file: 'dashboard.html', type: 'text/html; charset=utf-8' },
  '/admin/': { file: 'dashboard.html', type: 'text/html; charset=utf-8' },
  '/admin/dashboard.js': { file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
  '/admin/dashboard.css': { file: 'dashboard.css', type: 'text/css; charset=utf-8' }
}
// [OPS-DASH-4] nothing fetched off the broker, no inline script, no framing
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store'
}

/** The one message for an unknown user and a wrong password ([OPS-DASH-2]). */
export const LOGIN_REFUSED = 'wrong user name or password'

/** One sample of the history. */
interface HistorySample { t: number, in: number, out: number, queued: number }

interface Feed {
  readonly res: ServerResponse
  readonly token: string
  readonly event: string | undefined
  readonly service: string | undefined
}

type Route = (req: IncomingMessage, res: ServerResponse) => void

function json (res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...extra })
  res.end(text)
}

function cookieOf (req: IncomingMessage): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=')
    if (k === COOKIE) return v.join('=')
  }
  return undefined
}

/**
 * [OPS-DASH-6] A POST must come from the page itself: an Origin naming this host (a browser sends one
 * with every POST), no cross-site Sec-Fetch-Site, and a JSON body (which a cross-site form cannot send).
 */
function sameOrigin (req: IncomingMessage): boolean {
  const origin = req.headers.origin
  const host = req.headers.host
  if (origin === undefined || host === undefined) return false
  let o: URL
  try {
    o = new URL(origin)
  } catch {
    return false
  }
  const site = req.headers['sec-fetch-site']
  if (site !== undefined && site !== 'same-origin') return false
  return o.host === host
}

export class Dashboard {
  readonly sessions: AdminSessions
  readonly gateways: GatewayScraper
  /** Feeds closed because their page did not read. */
  feedsDropped = 0
  private readonly limits: Record<keyof typeof DASHBOARD_DEFAULTS, number>
  private readonly logger: Logger
  private readonly feeds = new Set<Feed>()
  private readonly history: HistorySample[] = []
  private timer: NodeJS.Timeout | null = null
  private last: { t: number, stored: number, delivered: number, perEvent: BrokerStats['perEvent'] } | null = null
  private rates: { in: number, out: number, perEvent: Record<string, { in: number, out: number }> } = { in: 0, out: 0, perEvent: {} }
  private reloading = false
  private readonly routes: Record<string, Partial<Record<string, Route>>>

  private constructor (private readonly options: DashboardOptions, private readonly files: ReadonlyMap<string, Buffer>) {
    const l = withDefaults('dashboard', DASHBOARD_DEFAULTS, {
      maxSessions: options.maxSessions,
      sessionIdleMs: options.sessionIdleMs,
      maxFeeds: options.maxFeeds,
      maxFeedBufferedBytes: options.maxFeedBufferedBytes,
      sampleIntervalMs: options.sampleIntervalMs,
      historySamples: options.historySamples,
      tailShown: options.tailShown,
      clientsShown: options.clientsShown,
      maxBodyBytes: options.maxBodyBytes
    })
    checkInt('dashboard', 'maxFeeds', l.maxFeeds, 1, 1000)
    checkInt('dashboard', 'maxFeedBufferedBytes', l.maxFeedBufferedBytes, 16 * 1024, 256 * 1024 * 1024)
    checkInt('dashboard', 'sampleIntervalMs', l.sampleIntervalMs, 20, 60_000)
    checkInt('dashboard', 'historySamples', l.historySamples, 1, 100_000)
    checkInt('dashboard', 'tailShown', l.tailShown, 0, 100_000)
    checkInt('dashboard', 'clientsShown', l.clientsShown, 0, 100_000)
    checkInt('dashboard', 'maxBodyBytes', l.maxBodyBytes, 256, 1024 * 1024)
    this.limits = l
    this.logger = options.logger ?? silentLogger
    this.sessions = new AdminSessions({ maxSessions: l.maxSessions, idleMs: l.sessionIdleMs })
    this.gateways = new GatewayScraper({ urls: options.gateways ?? [], intervalMs: options.gatewayIntervalMs, timeoutMs: options.gatewayTimeoutMs, maxBytes: options.gatewayMaxBytes })
    const page: Route = (req, res) => { this.page(req, res) }
    this.routes = {
      '/admin': { GET: page },
      '/admin/': { GET: page },
      '/admin/dashboard.js': { GET: page },
      '/admin/dashboard.css': { GET: page },
      '/admin/session': { GET: (req, res) => { this.session(req, res) } },
      '/admin/feed': { GET: (req, res) => { this.feed(req, res) } },
      '/admin/login': { POST: (req, res) => { this.post(req, res, (body) => this.login(req, res, body)) } },
      '/admin/logout': { POST: (req, res) => { this.post(req, res, async () => { this.logout(req, res) }) } },
      '/admin/reload-site': { POST: (req, res) => { this.post(req, res, async () => { await this.reload(req, res) }) } }
    }
  }

  /** Reads the page's files and starts sampling (and scraping gateways). */
  static async create (options: DashboardOptions): Promise<Dashboard> {
    if (options?.broker === undefined) throw new ConfigError('dashboard: option "broker" is required')
    const files = new Map<string, Buffer>()
    for (const f of new Set(Object.values(FILES).map((x) => x.file))) files.set(f, await readFile(`${WEB_DIR}${f}`))
    const d = new Dashboard(options, files)
    d.start()
    return d
  }

  /** Feeds open now. */
  get feedCount (): number {
    return this.feeds.size
  }

  /** Serves a request under /admin (true), or leaves it to the caller (false). */
  handle (req: IncomingMessage, res: ServerResponse): boolean {
    const path = (req.url ?? '/').split('?')[0] as string
    if (path !== DASHBOARD_PATH && !path.startsWith(`${DASHBOARD_PATH}/`)) return false
    const route = Object.hasOwn(this.routes, path) ? this.routes[path] : undefined
    if (route === undefined) {
      json(res, 404, { error: `not found: ${path}` })
      return true
    }
    const fn = Object.hasOwn(route, req.method ?? '') ? route[req.method ?? ''] : undefined
    if (fn === undefined) {
      const allow = Object.keys(route).join(', ')
      json(res, 405, { error: `method not allowed: ${allow} only` }, { allow })
      return true
    }
    fn(req, res)
    return true
  }

  close (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    this.gateways.stop()
    for (const f of this.feeds) f.res.destroy()
    this.feeds.clear()
  }

  private start (): void {
    this.sample()
    this.timer = setInterval(() => { this.tick() }, this.limits.sampleIntervalMs)
    this.timer.unref()
    this.gateways.start()
  }

  /** Takes one sample: rates since the last one, and the history. */
  private sample (): BrokerStats {
    const stats = this.options.broker.stats()
    const t = Date.now()
    let stored = 0
    for (const e of Object.values(stats.perEvent)) stored += e.stored
    if (this.last !== null) {
      const dt = Math.max(1, t - this.last.t) / 1000
      const perEvent: Record<string, { in: number, out: number }> = {}
      for (const [name, e] of Object.entries(stats.perEvent)) {
        const before = this.last.perEvent[name]
        perEvent[name] = { in: (e.stored - (before?.stored ?? 0)) / dt, out: (e.delivered - (before?.delivered ?? 0)) / dt }
      }
      this.rates = { in: (stored - this.last.stored) / dt, out: (stats.delivered - this.last.delivered) / dt, perEvent }
      this.history.push({ t, in: this.rates.in, out: this.rates.out, queued: stats.storedEvents })
      if (this.history.length > this.limits.historySamples) this.history.shift()
    }
    this.last = { t, stored, delivered: stats.delivered, perEvent: stats.perEvent }
    return stats
  }

  private tick (): void {
    const stats = this.sample()
    if (this.feeds.size === 0) return
    const shared = this.figures(stats)
    const latest = this.history[this.history.length - 1]
    for (const f of this.feeds) this.send(f, { ...shared, sample: latest ?? null })
  }

  /** What every feed gets each second (the tail apart). */
  private figures (stats: BrokerStats): Record<string, unknown> {
    const b = this.options.broker
    const names = new Set([...Object.keys(stats.perEvent), ...Object.keys(stats.storedByEvent), ...Object.keys(stats.lag), ...Object.keys(stats.dropped)])
    const events = [...names].sort().map((name) => ({
      name,
      stored: stats.storedByEvent[name] ?? null,
      storedTotal: stats.perEvent[name]?.stored ?? 0,
      deliveredTotal: stats.perEvent[name]?.delivered ?? 0,
      inPerSec: this.rates.perEvent[name]?.in ?? 0,
      outPerSec: this.rates.perEvent[name]?.out ?? 0,
      pushedOut: stats.dropped[name]?.pushedOut ?? 0,
      expired: (stats.dropped[name]?.expired ?? 0) + (stats.dropped[name]?.expiredOnArrival ?? 0),
      refused: Object.values(stats.perEvent[name]?.refused ?? {}).reduce((a, n) => a + n, 0),
      subscriptions: stats.lag[name]?.subscriptions ?? 0,
      maxLag: stats.lag[name]?.max ?? 0
    }))
    return {
      t: Date.now(),
      rates: { in: this.rates.in, out: this.rates.out },
      storedEvents: stats.storedEvents,
      head: stats.head,
      // the store counts events per name, not their bytes
      bytesKnown: false,
      events,
      connections: stats.connectionsByKind,
      connectionsRefused: stats.connectionsRefused,
      slowConnectionsClosed: stats.slowConnectionsClosed,
      logins: stats.logins,
      connected: b.connected(this.limits.clientsShown),
      gateways: this.gateways.list() satisfies GatewayView[],
      feeds: { open: this.feeds.size, max: this.limits.maxFeeds, dropped: this.feedsDropped },
      reload: this.options.reloadSite !== undefined
    }
  }

  /** [OPS-DASH-5] Writes one SSE message; a feed whose page does not read is closed instead. */
  private send (f: Feed, body: Record<string, unknown>): void {
    if (this.live(f.token) === null) {
      // logged out or expired: the page shows the login again
      f.res.end('event: logout\ndata: {}\n\n')
      this.feeds.delete(f)
      return
    }
    if (f.res.writableLength > this.limits.maxFeedBufferedBytes) {
      this.feedsDropped++
      this.logger.warn({ unsentBytes: f.res.writableLength }, 'closing a dashboard feed that does not read')
      this.feeds.delete(f)
      f.res.destroy()
      return
    }
    const tail = this.options.broker.recentEvents({ event: f.event, service: f.service }, this.limits.tailShown)
    f.res.write(`data: ${JSON.stringify({ ...body, tail, filter: { event: f.event ?? '', service: f.service ?? '' } })}\n\n`)
  }

  private user (req: IncomingMessage): { token: string, user: string } | null {
    const token = cookieOf(req)
    const user = this.live(token)
    return user === null || token === undefined ? null : { token, user }
  }

  /** The user of a live session who is still an admin (a site reload may have changed that), else null. */
  private live (token: string | undefined): string | null {
    const user = this.sessions.use(token)
    if (user === null) return null
    if (!this.options.broker.isAdminUser(user)) {
      this.sessions.endUser(user)
      return null
    }
    return user
  }

  private page (req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] as string
    const f = FILES[path] as { file: string, type: string }
    const body = this.files.get(f.file) as Buffer
    res.writeHead(200, { 'content-type': f.type, 'content-length': body.byteLength, ...PAGE_HEADERS })
    res.end(body)
  }

  private session (req: IncomingMessage, res: ServerResponse): void {
    const u = this.user(req)
    if (u === null) json(res, 401, { error: 'not logged in' })
    else json(res, 200, { user: u.user, reload: this.options.reloadSite !== undefined })
  }

  private feed (req: IncomingMessage, res: ServerResponse): void {
    const u = this.user(req)
    if (u === null) return json(res, 401, { error: 'not logged in' })
    if (this.feeds.size >= this.limits.maxFeeds) return json(res, 503, { error: `too many dashboard feeds open (${this.limits.maxFeeds}); close a page and reload` })
    const q = new URL(req.url ?? '/', 'http://x').searchParams
    const pick = (k: string): string | undefined => {
      const v = q.get(k)?.slice(0, 200)
      return v === undefined || v === '' ? undefined : v
    }
    const f: Feed = { res, token: u.token, event: pick('event'), service: pick('service') }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', connection: 'keep-alive' })
    this.feeds.add(f)
    res.once('close', () => { this.feeds.delete(f) })
    // a fresh page gets the history and the figures at once
    const stats = this.options.broker.stats()
    this.send(f, { ...this.figures(stats), history: this.history })
  }

  /** A bounded JSON POST from the page itself ([OPS-DASH-6]), then `then` with its body. */
  private post (req: IncomingMessage, res: ServerResponse, then: (body: unknown) => Promise<void>): void {
    if (!sameOrigin(req)) {
      req.resume()
      return json(res, 403, { error: 'cross-origin request refused' })
    }
    if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
      req.resume()
      return json(res, 415, { error: 'send application/json' })
    }
    const max = this.limits.maxBodyBytes
    // answered at once, the rest of the body unread: the connection closes once the answer is out
    const tooLarge = (): void => {
      res.setHeader('connection', 'close')
      res.once('finish', () => { req.socket.destroy() })
      json(res, 413, { error: `request body above ${max} bytes` })
    }
    if (Number(req.headers['content-length'] ?? 0) > max) return tooLarge()
    const chunks: Buffer[] = []
    let n = 0
    let over = false
    req.on('data', (c: Buffer) => {
      if (over) return
      n += c.byteLength
      if (n > max) {
        over = true
        chunks.length = 0
        req.pause()
        return tooLarge()
      }
      chunks.push(c)
    })
    req.on('end', () => {
      if (over) return
      let body: unknown = null
      const text = Buffer.concat(chunks).toString('utf8')
      if (text !== '') {
        try {
          body = JSON.parse(text)
        } catch {
          return json(res, 400, { error: 'the body is not JSON' })
        }
      }
      then(body).catch((err: unknown) => {
        this.logger.error({ err }, 'dashboard request failed')
        if (!res.headersSent) json(res, 500, { error: 'internal error' })
      })
    })
  }

  /** [OPS-DASH-2] the admin login. */
  private async login (req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    const b = body as { user?: unknown, password?: unknown } | null
    if (typeof b?.user !== 'string' || typeof b.password !== 'string' || b.user.length === 0 || b.user.length > 200 || b.password.length > 1024) {
      return json(res, 400, { error: 'send {"user": "...", "password": "..."}' })
    }
    const r = await this.options.broker.checkAdmin(b.user, b.password, req.socket.remoteAddress)
    if (r.ok) {
      const token = this.sessions.create(r.user)
      const cookie = `${COOKIE}=${token}; Path=${DASHBOARD_PATH}; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(this.sessions.idleMs / 1000)}${this.options.secure ? '; Secure' : ''}`
      this.logger.info({ user: r.user, address: req.socket.remoteAddress }, 'dashboard login')
      return json(res, 200, { user: r.user, reload: this.options.reloadSite !== undefined }, { 'set-cookie': cookie })
    }
    const [status, error] = r.reason === 'notAdmin'
      ? [403, `user ${b.user} has no admin role: the dashboard is for the site's admin roles`]
      : r.reason === 'throttled'
        ? [429, 'too many failed logins from this address or for this name; try again later']
        : r.reason === 'busy' ? [503, 'too many logins in progress; try again later'] : [401, LOGIN_REFUSED]
    if (r.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, r.delayMs).unref())
    json(res, status, { error })
  }

  private logout (req: IncomingMessage, res: ServerResponse): void {
    this.sessions.end(cookieOf(req))
    json(res, 200, { user: null }, { 'set-cookie': `${COOKIE}=; Path=${DASHBOARD_PATH}; HttpOnly; SameSite=Strict; Max-Age=0${this.options.secure ? '; Secure' : ''}` })
  }

  /** [OPS-DASH-8] the site reload button. */
  private async reload (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = this.user(req)
    if (u === null) return json(res, 401, { error: 'not logged in' })
    const reloadSite = this.options.reloadSite
    if (reloadSite === undefined) return json(res, 501, { error: 'this broker cannot reload its site from the dashboard' })
    if (this.reloading) return json(res, 409, { error: 'a site reload is already under way' })
    this.reloading = true
    try {
      const report = await reloadSite()
      this.logger.info({ user: u.user }, 'site reloaded from the dashboard')
      json(res, 200, report ?? { reloaded: true })
    } catch (err) {
      if (err instanceof ConfigError) json(res, 400, { error: err.message })
      else {
        this.logger.error({ err }, 'site reload failed')
        json(res, 500, { error: `site reload failed: ${(err as Error).message}` })
      }
    } finally {
      this.reloading = false
    }
  }
}

/**
 * The dashboard's view of gateways ([OPS-DASH-7]): each gateway's `/metrics` URL (given with
 * `--dashboard-gateway`) is fetched every `intervalMs`, with a timeout and a size bound, and the few
 * figures the page shows are read out of its Prometheus text. A gateway that does not answer, answers
 * slowly, too much or garbage shows as down with the reason; the page never waits for it (it reads
 * the last result).
 */
import { ConfigError, checkInt, withDefaults } from '@herald/protocol'

export interface GatewayScraperOptions {
  /** The gateways' metrics URLs (http:// or https://, path /metrics). */
  readonly urls: readonly string[]
  /** How often each is fetched, in ms. Default 5,000. */
  readonly intervalMs?: number | undefined
  /** A fetch not done after this long counts as down, in ms. Default 2,000. */
  readonly timeoutMs?: number | undefined
  /** Largest body read, in bytes; a larger one counts as down. Default 1 MiB. */
  readonly maxBytes?: number | undefined
}

export const GATEWAY_SCRAPER_DEFAULTS = Object.freeze({ intervalMs: 5000, timeoutMs: 2000, maxBytes: 1024 * 1024 })

/** Most gateways one broker scrapes. */
export const MAX_DASHBOARD_GATEWAYS = 32

/** What the page shows of one gateway. */
export interface GatewayView {
  readonly url: string
  /** Its last fetch worked and the body had the gateway's figures. */
  readonly up: boolean
  /** Why it is down (or null). */
  readonly problem: string | null
  /** When it was last fetched (ms since the epoch), null before the first one ended. */
  readonly checkedAt: number | null
  readonly backlogEvents: number | null
  readonly backlogBytes: number | null
  readonly durable: boolean | null
  readonly brokerConnected: boolean | null
  /** Per device line: up or not, frames refused (all reasons). */
  readonly lines: ReadonlyArray<{ readonly line: string, readonly up: boolean, readonly framesRefused: number }>
}

/** One sample line of the Prometheus text format: name, labels, value. */
interface Sample { name: string, labels: Record<string, string>, value: number }

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

/** Parses Prometheus text; lines that are not samples are skipped (comments, garbage). */
export function parsePrometheusText (text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = SAMPLE.exec(line.trim())
    if (m === null) continue
    const value = Number(m[3])
    if (Number.isNaN(value)) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_s, c: string) => c === 'n' ? '\n' : c)
    out.push({ name: m[1] as string, labels, value })
  }
  return out
}

/** The page's figures out of a gateway's metrics; a ConfigError-free Error if they are not there. */
export function gatewayFigures (url: string, text: string, checkedAt: number): GatewayView {
  const samples = parsePrometheusText(text)
  const one = (name: string): number | null => samples.find((s) => s.name === name)?.value ?? null
  const backlogEvents = one('herald_gateway_backlog_events')
  if (backlogEvents === null) throw new Error('not a Herald gateway\'s metrics (no herald_gateway_backlog_events)')
  const lines = new Map<string, { line: string, up: boolean, framesRefused: number }>()
  const line = (name: string): { line: string, up: boolean, framesRefused: number } => {
    let l = lines.get(name)
    if (l === undefined) lines.set(name, l = { line: name, up: false, framesRefused: 0 })
    return l
  }
  for (const s of samples) {
    const name = s.labels.line
    if (name === undefined || lines.size >= 1000) continue
    if (s.name === 'herald_gateway_device_line_up') line(name).up = s.value === 1
    else if (s.name === 'herald_gateway_frames_refused_total') line(name).framesRefused += s.value
  }
  const durable = one('herald_gateway_durable')
  const connected = one('herald_gateway_broker_connected')
  return {
    url,
    up: true,
    problem: null,
    checkedAt,
    backlogEvents,
    backlogBytes: one('herald_gateway_backlog_bytes'),
    durable: durable === null ? null : durable === 1,
    brokerConnected: connected === null ? null : connected === 1,
    lines: [...lines.values()]
  }
}

function down (url: string, problem: string, checkedAt: number | null): GatewayView {
  return { url, up: false, problem, checkedAt, backlogEvents: null, backlogBytes: null, durable: null, brokerConnected: null, lines: [] }
}

/** Reads a response body up to `maxBytes`; rejects beyond it. */
async function readBounded (res: Response, maxBytes: number): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN)
  if (declared > maxBytes) throw new Error(`answered ${declared} bytes, more than ${maxBytes}`)
  if (res.body === null) return ''
  const chunks: Uint8Array[] = []
  let n = 0
  for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += c.byteLength
    if (n > maxBytes) throw new Error(`answered more than ${maxBytes} bytes`)
    chunks.push(c)
  }
  return Buffer.concat(chunks).toString('utf8')
}

export class GatewayScraper {
  private readonly views = new Map<string, GatewayView>()
  private timer: NodeJS.Timeout | null = null
  private readonly inFlight = new Set<string>()
  readonly intervalMs: number
  readonly timeoutMs: number
  readonly maxBytes: number

  constructor (private readonly options: GatewayScraperOptions) {
    const o = withDefaults('dashboard gateways', GATEWAY_SCRAPER_DEFAULTS, { intervalMs: options.intervalMs, timeoutMs: options.timeoutMs, maxBytes: options.maxBytes })
    checkInt('dashboard gateways', 'intervalMs', o.intervalMs, 100, 3_600_000)
    checkInt('dashboard gateways', 'timeoutMs', o.timeoutMs, 50, 60_000)
    checkInt('dashboard gateways', 'maxBytes', o.maxBytes, 1024, 64 * 1024 * 1024)
    if (options.urls.length > MAX_DASHBOARD_GATEWAYS) throw new ConfigError(`--dashboard-gateway: at most ${MAX_DASHBOARD_GATEWAYS} gateways`)
    for (const u of options.urls) {
      let parsed: URL
      try {
        parsed = new URL(u)
      } catch {
        throw new ConfigError(`--dashboard-gateway: ${JSON.stringify(u)} is not a URL (e.g. http://127.0.0.1:9101/metrics)`)
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ConfigError(`--dashboard-gateway: ${u} is not an http:// or https:// URL`)
      this.views.set(u, down(u, 'not checked yet', null))
    }
    this.intervalMs = o.intervalMs
    this.timeoutMs = o.timeoutMs
    this.maxBytes = o.maxBytes
  }

  /** Fetches every gateway now and then every `intervalMs`. */
  start (): void {
    if (this.timer !== null || this.options.urls.length === 0) return
    void this.scrapeAll()
    this.timer = setInterval(() => { void this.scrapeAll() }, this.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** The last result for each gateway, in the order given. */
  list (): GatewayView[] {
    return [...this.views.values()]
  }

  /** Fetches every gateway once (a fetch still running for one is not started twice). */
  async scrapeAll (): Promise<void> {
    await Promise.all(this.options.urls.map(async (u) => { await this.scrape(u) }))
  }

  private async scrape (url: string): Promise<void> {
    if (this.inFlight.has(url)) return
    this.inFlight.add(url)
    try {
      const signal = AbortSignal.timeout(this.timeoutMs)
      const res = await fetch(url, { signal, redirect: 'error', headers: { accept: 'text/plain' } })
      if (res.status !== 200) {
        await res.body?.cancel()
        throw new Error(`answered HTTP ${res.status}`)
      }
      const text = await readBounded(res, this.maxBytes)
      this.views.set(url, gatewayFigures(url, text, Date.now()))
    } catch (err) {
      const e = err as Error
      const problem = e.name === 'TimeoutError' || e.name === 'AbortError'
        ? `no answer within ${this.timeoutMs} ms`
        : (e.cause as Error | undefined)?.message ?? e.message
      this.views.set(url, down(url, problem, Date.now()))
    } finally {
      this.inFlight.delete(url)
    }
  }
}

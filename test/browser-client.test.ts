/**
 * The browser client in real headless Chromium ([CLI-BROWSER-1] .. [CLI-BROWSER-3]): a page
 * subscribes with the browser entry's default transport, MQTT over WebSocket, to a real
 * `herald broker` process's `--ws-port` listener (through a relay the test can cut,
 * test/support/ws-bridge.ts), while a service raises 5,000 events; the test reloads the page several
 * times mid-stream, cuts the WebSocket once and restarts the broker; at the end every event was
 * handled exactly once in order, flagged redeliveries at most one per reload, no silent duplicate,
 * and the position in IndexedDB is the last one handled. The handler's effect is recorded in the test
 * process (a function the page awaits, page.exposeFunction), so what was handled before a reload is
 * still there to count, whatever the browser did not keep.
 * Also: wrong password and an unauthorized event give the typed errors in the page, and a second
 * open of the same client's positions is refused (the tab lock).
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { BrowserContext, Page } from 'playwright-core'
import { Harness } from './support/harness.js'
import { startBrokerProcess, writeTestSite, type Proc } from './support/processes.js'
import { freePort } from './support/ports.js'
import { SECRETS } from './support/site.js'
import { Chromium, bundle, serveStatic, type StaticServer } from './support/browser.js'
import { bridgeWebSocket, type WebSocketBridge } from './support/ws-bridge.js'

const EVENTS = 5000
/** Longest one call into the page may take: a hung or crashed browser fails the test, naming the call. */
const CALL_MS = 60_000

interface LogEntry { readonly i: number, readonly position: number, readonly redelivered: boolean }
interface PageApi {
  handled: number
  status: string
  started: boolean
  state (): string
  errors: Array<{ code: string, message: string }>
  readLog (): Promise<LogEntry[]>
  readPositions (): Promise<Array<{ k: string, p: number, s: number | null }>>
  errorCases (wrongPassword: string, forbiddenEvent: string): Promise<Record<string, string>>
}
declare const heraldTest: PageApi

/** `p`, or a rejection naming `what` after `ms`. */
async function within<T> (what: string, p: Promise<T>, ms = CALL_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new Error(`browser test: ${what} took over ${ms} ms (browser hung?)`)) }, ms)
  })
  try {
    return await Promise.race([p, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Polls `fn` until it returns true, failing after `ms` with `what` (each poll bounded too). */
async function until (what: string, fn: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await within(`a poll for ${what}`, fn())) return
    if (Date.now() > deadline) throw new Error(`browser test: timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** `page.evaluate(fn)`, bounded by CALL_MS. */
async function inPage<T> (page: Page, fn: () => T | Promise<T>): Promise<T> {
  return within('page.evaluate', page.evaluate(fn))
}

/** Waits until the page's endpoint has subscribed; a timeout names the errors the page saw. */
async function subscribed (page: Page, what: string): Promise<void> {
  await until(what, () => inPage(page, () => heraldTest.started), 120_000).catch(async (err: unknown) => {
    const errors = await inPage(page, () => heraldTest.errors).catch(() => [])
    throw new Error(`${(err as Error).message}; errors in the page: ${JSON.stringify(errors)}`)
  })
}

describe('browser client in Chromium', () => {
  let h: Harness
  let chromium: Chromium
  /** One context for every page: tabs of one profile, sharing IndexedDB and Web Locks. */
  let tabs: BrowserContext
  let site: StaticServer
  let relay: WebSocketBridge
  let broker: { proc: Proc, url: string, port: number }
  let siteFile: string
  let brokerPort: number
  let wsPort: number
  const dataDir = (): string => join(h.dir, 'broker')
  /** `herald broker` on the same ports every time (so a restart is where the page reconnects). */
  const startBroker = (): ReturnType<typeof startBrokerProcess> => startBrokerProcess(siteFile, dataDir(), brokerPort, ['--ws-port', String(wsPort)])

  beforeAll(async () => {
    h = await Harness.create()
    siteFile = await writeTestSite(h.dir)
    brokerPort = await freePort()
    wsPort = await freePort()
    broker = await startBroker()
    h.onClose(() => broker.proc.kill())
    relay = await bridgeWebSocket(`ws://127.0.0.1:${wsPort}/mqtt`)
    h.onClose(() => relay.close())
    site = await serveStatic({
      '/index.html': '<!doctype html><meta charset="utf-8"><title>herald browser test</title><script type="module" src="/page.js"></script>',
      '/page.js': await bundle('test/fixtures/browser/client-page.ts')
    })
    h.onClose(() => site.close())
    chromium = await Chromium.launch()
    h.onClose(() => chromium.close())
    tabs = await chromium.newContext()
  })
  afterAll(async () => { await h?.close() })

  const pageUrl = (clientName: string, autostart: boolean, more: { ifLocked?: string, start?: string } = {}): string => `${site.origin}/?cfg=` + encodeURIComponent(JSON.stringify({
    url: relay.url, user: 'bob', password: SECRETS.bob, clientName, event: 'readings', autostart, ...more
  }))
  /** A new tab on `url`. */
  const open = async (url: string, setup?: (page: Page) => Promise<void>): Promise<Page> =>
    (await chromium.open(url, { context: tabs, ...(setup !== undefined ? { setup } : {}) })).page

  it('handles 5,000 events exactly once in order across reloads, a WebSocket cut and a broker restart; positions in IndexedDB end at the last one', async () => {
    // the handler's effect lands here, in the test process: it outlives every reload of the page,
    // and nothing the browser orders inside its own storage can stand in for a durable start mark
    const log: LogEntry[] = []
    const page = await open(pageUrl('console', true), async (p) => {
      p.on('pageerror', (err) => { process.stderr.write(`page error: ${String(err)}\n`) })
      await p.exposeFunction('heraldRecord', (entry: LogEntry) => { log.push(entry) })
    })
    await subscribed(page, 'the page to subscribe')

    const service = await h.service(broker.url, 'svc-b', { memoryOnly: false })
    let raised = 0
    const raising = (async () => {
      for (; raised < EVENTS;) {
        const n = Math.min(100, EVENTS - raised)
        const items = Array.from({ length: n }, (_, k) => ({ name: 'readings', payload: { i: raised + k } }))
        await service.raiseBatch(items)
        raised += n
      }
    })()

    let reloads = 0
    const reloadAt = [700, 1900, 3300]
    const cutAt = 1300
    const restartAt = 2600
    let cut = false
    let restarted = false
    for (const at of [...reloadAt, cutAt, restartAt].sort((a, b) => a - b)) {
      await until(`${at} events handled`, async () => log.length >= at, 240_000)
      process.stderr.write(`browser test: ${at} handled at ${new Date().toISOString()}\n`)
      if (at === cutAt) {
        expect(relay.cut()).toBeGreaterThan(0)
        cut = true
      } else if (at === restartAt) {
        await broker.proc.kill()
        broker = await startBroker()
        restarted = true
      } else {
        await within('page.reload', page.reload())
        reloads++
        await subscribed(page, 'the reloaded page to subscribe')
      }
    }
    await raising
    expect(cut && restarted).toBe(true)
    await until('every event to be handled', async () => new Set(log.map((e) => e.i)).size >= EVENTS, 300_000)
    // exactly once, in order: each entry is the next event, or an event handled before: then it must
    // be flagged (no silent duplicate), and only the one before (a reload redelivers at most one)
    let next = 0
    let flagged = 0
    const silent: LogEntry[] = []
    for (const [k, e] of log.entries()) {
      if (e.i === next) {
        next++
        if (e.redelivered) flagged++ // flagged but first seen here: the mark was durable, the effect was not
      } else if (e.i < next) {
        if (!e.redelivered) silent.push(e)
        else if (e.i === next - 1) flagged++
        else throw new Error(`event ${e.i} redelivered after ${next - 1} was handled: rolled back more than one event (entry ${k})`)
      } else {
        throw new Error(`event ${next} skipped: ${e.i} handled next (entry ${k})`)
      }
    }
    process.stderr.write(`browser test: ${log.length} handled for ${EVENTS} events, ${flagged} flagged redelivered, ${reloads} reloads\n`)
    expect(next).toBe(EVENTS)
    expect(silent).toEqual([])
    expect(flagged).toBeLessThanOrEqual(reloads)
    const last = log[log.length - 1]!
    await until('the position in IndexedDB to be the last handled', async () => {
      const records = await inPage(page, () => heraldTest.readPositions())
      const r = records.find((x) => x.k === 'readings')
      return r !== undefined && r.p === last.position && r.s === null
    }, 30_000)
    expect(await inPage(page, () => heraldTest.errors)).toEqual([])
    await page.close()
  }, 900_000)

  it('wrong password and an unauthorized event give typed errors in the page; a second open of the same client is POSITIONS_LOCKED', async () => {
    const page = await open(pageUrl('errors', true, { start: 'new' }))
    await subscribed(page, 'the page to subscribe')
    const out = await within('the error cases', page.evaluate((pw: string) => heraldTest.errorCases(pw, 'alarms'), 'not-the-password'))
    expect(out).toEqual({
      wrongPasswordError: 'AuthError:BAD_CREDENTIALS',
      wrongPasswordSubscribe: 'AuthError:BAD_CREDENTIALS',
      unauthorizedSubscribe: 'AuthError:NOT_AUTHORIZED',
      secondOpen: 'PersistenceError:POSITIONS_LOCKED'
    })
    await page.close()
  })

  it('[CLI-BROWSER-3] two tabs of one client: the second is refused (POSITIONS_LOCKED); a third that takes over gets the events, and the first stops with POSITIONS_LOCKED', async () => {
    const first = await open(pageUrl('tabs', true, { start: 'new' }))
    await subscribed(first, 'the first tab to subscribe')
    const second = await open(pageUrl('tabs', true, { start: 'new' }))
    await until('the second tab to be refused', async () => (await inPage(second, () => heraldTest.errors)).some((e) => e.code === 'POSITIONS_LOCKED'))
    expect(await inPage(second, () => heraldTest.started)).toBe(false)
    await second.close()

    const third = await open(pageUrl('tabs', true, { start: 'new', ifLocked: 'takeover' }))
    await subscribed(third, 'the third tab to subscribe')
    await until('the first tab to stop', async () => await inPage(first, () => heraldTest.state()) === 'closed')
    expect((await inPage(first, () => heraldTest.errors)).map((e) => e.code)).toContain('POSITIONS_LOCKED')

    // the first tab no longer connects (one MQTT connection per client id): the third gets what follows
    const before = (await inPage(third, () => heraldTest.readLog())).length
    const service = await h.service(broker.url, 'svc-b', { memoryOnly: true })
    await service.raiseBatch(Array.from({ length: 20 }, (_, k) => ({ name: 'readings', payload: { i: 100_000 + k } })))
    await until('the third tab to handle the new events', async () => (await inPage(third, () => heraldTest.readLog())).filter((e) => e.i >= 100_000).length === 20, 60_000)
    expect((await inPage(third, () => heraldTest.readLog())).length).toBeGreaterThanOrEqual(before + 20)
    expect(await inPage(first, () => heraldTest.state())).toBe('closed')
    await first.close()
    await third.close()
  }, 120_000)
})

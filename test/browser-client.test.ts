/**
 * The browser client in real headless Chromium ([CLI-BROWSER-1] .. [CLI-BROWSER-3]): a page
 * subscribes over MQTT over WebSocket (through a bridge the test can cut, to a real `herald broker`
 * process: its `--ws-port` listener once the CLI has one, else its TCP port) while a service
 * raises 5,000 events; the test reloads the page several times mid-stream, cuts the WebSocket once
 * and restarts the broker; at the end every event was handled exactly once in order, flagged
 * redeliveries at most one per reload, no silent duplicate, and the position in IndexedDB is the last
 * one handled. The handler's effect is recorded in the test process (a function the page awaits), so
 * what was handled before a reload is still there to count, whatever the browser did not keep.
 * Also: wrong password and an unauthorized event give the typed errors in the page, and a second
 * open of the same client's positions is refused (the tab lock).
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Browser, Page } from 'puppeteer-core'
import { Harness } from './support/harness.js'
import { startBrokerProcess, writeTestSite, type Proc } from './support/processes.js'
import { freePort } from './support/ports.js'
import { SECRETS } from './support/site.js'
import { bundlePage, launchChromium, startPageServer, type PageServer } from './support/browser-page.js'

const ROOT = join(import.meta.dirname, '..')
const EVENTS = 5000
// the browser entry's own WebSocket transport once it is in the tree; until then mqtt.js's browser build
const TRANSPORT = existsSync(join(ROOT, 'client-endpoint/src/browser/websocket-transport.ts')) ? 'default' : 'mqttjs'
// the broker's own WebSocket listener (`--ws-port`) once the CLI has it; until then its TCP port behind the bridge
const BROKER_WS = readFileSync(join(ROOT, 'cli/src/commands/broker.ts'), 'utf8').includes("'--ws-port <n>'")

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

/** Polls `fn` until it returns true, failing after `ms` with `what`. */
async function until (what: string, fn: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await fn()) return
    if (Date.now() > deadline) throw new Error(`browser test: timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Waits until the page's endpoint has subscribed; a timeout names the errors the page saw. */
async function subscribed (page: Page, what: string): Promise<void> {
  await until(what, () => page.evaluate(() => heraldTest.started), 120_000).catch(async (err: unknown) => {
    const errors = await page.evaluate(() => heraldTest.errors).catch(() => [])
    throw new Error(`${(err as Error).message}; errors in the page: ${JSON.stringify(errors)}`)
  })
}

describe('browser client in Chromium', () => {
  let h: Harness
  let browser: Browser
  let pages: PageServer
  let broker: { proc: Proc, url: string, port: number }
  let site: string
  let brokerPort: number
  let wsPort: number
  const dataDir = (): string => join(h.dir, 'broker')
  /** `herald broker` on the same ports every time (so a restart is where the page reconnects). */
  const startBroker = (): ReturnType<typeof startBrokerProcess> => startBrokerProcess(site, dataDir(), brokerPort, BROKER_WS ? ['--ws-port', String(wsPort)] : [])

  beforeAll(async () => {
    h = await Harness.create()
    site = await writeTestSite(h.dir)
    brokerPort = await freePort()
    wsPort = await freePort()
    broker = await startBroker()
    h.onClose(() => broker.proc.kill())
    pages = await startPageServer(await bundlePage('test/fixtures/browser/client-page.ts'), BROKER_WS ? { wsUrl: `ws://127.0.0.1:${wsPort}/mqtt` } : { tcpPort: brokerPort })
    h.onClose(() => pages.close())
    browser = await launchChromium()
    h.onClose(() => browser.close())
  })
  afterAll(async () => { await h?.close() })

  const pageUrl = (clientName: string, autostart: boolean, more: { ifLocked?: string, start?: string } = {}): string => pages.url + '?cfg=' + encodeURIComponent(JSON.stringify({
    url: pages.wsUrl, user: 'bob', password: SECRETS.bob, clientName, event: 'readings', transport: TRANSPORT, autostart, ...more
  }))

  it('handles 5,000 events exactly once in order across reloads, a WebSocket cut and a broker restart; positions in IndexedDB end at the last one', async () => {
    const page = await browser.newPage()
    page.on('pageerror', (err) => { process.stderr.write(`page error: ${String(err)}\n`) })
    // the handler's effect lands here, in the test process: it outlives every reload of the page,
    // and nothing the browser orders inside its own storage can stand in for a durable start mark
    const log: LogEntry[] = []
    await page.exposeFunction('heraldRecord', (entry: LogEntry) => { log.push(entry) })
    await page.goto(pageUrl('console', true))
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
        expect(pages.cut()).toBeGreaterThan(0)
        cut = true
      } else if (at === restartAt) {
        await broker.proc.kill()
        broker = await startBroker()
        restarted = true
      } else {
        await page.reload()
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
    process.stderr.write(`browser test: ${log.length} handled for ${EVENTS} events, ${flagged} flagged redelivered, ${reloads} reloads (transport ${TRANSPORT}, broker ${BROKER_WS ? 'WebSocket listener' : 'TCP behind the bridge'})\n`)
    expect(next).toBe(EVENTS)
    expect(silent).toEqual([])
    expect(flagged).toBeLessThanOrEqual(reloads)
    const last = log[log.length - 1]!
    await until('the position in IndexedDB to be the last handled', async () => {
      const records = await page.evaluate(() => heraldTest.readPositions())
      const r = records.find((x) => x.k === 'readings')
      return r !== undefined && r.p === last.position && r.s === null
    }, 30_000)
    expect(await page.evaluate(() => heraldTest.errors)).toEqual([])
    await page.close()
  }, 900_000)

  it('wrong password and an unauthorized event give typed errors in the page; a second open of the same client is POSITIONS_LOCKED', async () => {
    const page = await browser.newPage()
    await page.goto(pageUrl('errors', true, { start: 'new' }))
    await subscribed(page, 'the page to subscribe')
    const out = await page.evaluate((pw: string) => heraldTest.errorCases(pw, 'alarms'), 'not-the-password')
    expect(out).toEqual({
      wrongPasswordError: 'AuthError:BAD_CREDENTIALS',
      wrongPasswordSubscribe: 'AuthError:BAD_CREDENTIALS',
      unauthorizedSubscribe: 'AuthError:NOT_AUTHORIZED',
      secondOpen: 'PersistenceError:POSITIONS_LOCKED'
    })
    await page.close()
  })

  it('[CLI-BROWSER-3] two tabs of one client: the second is refused (POSITIONS_LOCKED); a third that takes over gets the events, and the first stops with POSITIONS_LOCKED', async () => {
    const first = await browser.newPage()
    await first.goto(pageUrl('tabs', true, { start: 'new' }))
    await subscribed(first, 'the first tab to subscribe')
    const second = await browser.newPage()
    await second.goto(pageUrl('tabs', true, { start: 'new' }))
    await until('the second tab to be refused', async () => (await second.evaluate(() => heraldTest.errors)).some((e) => e.code === 'POSITIONS_LOCKED'))
    expect(await second.evaluate(() => heraldTest.started)).toBe(false)
    await second.close()

    const third = await browser.newPage()
    await third.goto(pageUrl('tabs', true, { start: 'new', ifLocked: 'takeover' }))
    await subscribed(third, 'the third tab to subscribe')
    await until('the first tab to stop', async () => await first.evaluate(() => heraldTest.state()) === 'closed')
    expect((await first.evaluate(() => heraldTest.errors)).map((e) => e.code)).toContain('POSITIONS_LOCKED')

    // the first tab no longer connects (one MQTT connection per client id): the third gets what follows
    const before = (await third.evaluate(() => heraldTest.readLog())).length
    const service = await h.service(broker.url, 'svc-b', { memoryOnly: true })
    await service.raiseBatch(Array.from({ length: 20 }, (_, k) => ({ name: 'readings', payload: { i: 100_000 + k } })))
    await until('the third tab to handle the new events', async () => (await third.evaluate(() => heraldTest.readLog())).filter((e) => e.i >= 100_000).length === 20, 60_000)
    expect((await third.evaluate(() => heraldTest.readLog())).length).toBeGreaterThanOrEqual(before + 20)
    expect(await first.evaluate(() => heraldTest.state())).toBe('closed')
    await first.close()
    await third.close()
  }, 120_000)
})

/**
 * The browser transport in a real browser: headless Chromium (test/support/browser.ts) loads a page
 * that imports webSocketTransport and Link, bundled here with esbuild for the browser (a Node
 * built-in anywhere in them fails the bundle), connects to a real broker's WebSocket listener as a
 * client, subscribes with a REQUEST frame and receives the EVENTS frame a service's events arrive
 * in. Also: a wrong password gives the typed AuthError in the page. [CONN-WSC-1]
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Chromium, bundle, serveStatic } from './support/browser.js'
import { Harness } from './support/harness.js'
import { SECRETS } from './support/site.js'

/** What the page exposes: one function that connects, subscribes and reports what came. */
const ENTRY = `
import { webSocketTransport } from './client-endpoint/src/browser/websocket-transport.ts'
import { Link, FrameType, clientClientId, clientMessageTopic, clientRequestTopic, decodeEvents, encodeRequest, frameType, utf8Decode } from '@herald/protocol'

globalThis.heraldSmoke = (url, user, password, event) => new Promise((resolve) => {
  const key = user + '/smoke'
  const link = new Link({
    transport: webSocketTransport(),
    url, clientId: clientClientId(key), username: user, password,
    replyTopic: clientMessageTopic(key), connectTimeoutMs: 10000, keepaliveSec: 30,
    reconnect: { initialMs: 50, maxMs: 500 }
  })
  const done = (result) => { void link.close().then(() => resolve(result)) }
  link.on('offline', (err) => { if (err !== null) done({ error: { name: err.name, code: err.code, message: err.message } }) })
  link.on('online', () => {
    link.send(clientRequestTopic(key), encodeRequest({ op: 'sub', sub: 1, event, services: null, position: 0, start: 'all', window: 100 }))
  })
  const payloads = []
  link.on('frame', (frame) => {
    if (frameType(frame) !== FrameType.EVENTS) return
    const f = decodeEvents(frame, () => event)
    for (const e of f.events) payloads.push(JSON.parse(utf8Decode(e.payload)))
    if (payloads.length >= 3) done({ payloads, protocol: 'ok' })
  })
  link.start()
})
`

let script = ''

beforeAll(async () => {
  script = await bundle({ contents: ENTRY, sourcefile: 'smoke-entry.ts' })
})

describe('the WebSocket transport in headless Chromium', () => {
  let h: Harness
  let browser: Chromium | null = null
  afterEach(async () => {
    await browser?.close()
    browser = null
    await h.close()
  })

  it('a page connects to a real broker over WebSocket, subscribes, and receives a service\'s events; a wrong password is a typed AuthError', async () => {
    expect(script).toContain('heraldSmoke')
    expect(script).not.toMatch(/from\s*["']node:/)
    h = await Harness.create()
    const broker = await h.broker({ webSocket: { port: 0 } })
    const wsUrl = broker.webSocketUrl as string
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 3; i++) await svc.raise('readings', { i })
    const site = await serveStatic({
      '/index.html': '<!doctype html><meta charset="utf-8"><title>smoke</title><script type="module" src="/smoke.js"></script>',
      '/smoke.js': script
    })
    h.onClose(() => site.close())

    browser = await Chromium.launch()
    const { page, errors } = await browser.open(site.origin)
    await page.waitForFunction(() => typeof (globalThis as { heraldSmoke?: unknown }).heraldSmoke === 'function')

    const got = await page.evaluate(async ([url, password]) => {
      return await (globalThis as unknown as { heraldSmoke: (u: string, user: string, p: string, e: string) => Promise<unknown> }).heraldSmoke(url, 'alice', password, 'readings')
    }, [wsUrl, SECRETS.alice] as const)
    expect(got).toEqual({ payloads: [{ i: 0 }, { i: 1 }, { i: 2 }], protocol: 'ok' })

    const refused = await page.evaluate(async ([url]) => {
      return await (globalThis as unknown as { heraldSmoke: (u: string, user: string, p: string, e: string) => Promise<unknown> }).heraldSmoke(url, 'alice', 'wrong', 'readings')
    }, [wsUrl] as const)
    expect(refused).toEqual({ error: { name: 'AuthError', code: 'BAD_CREDENTIALS', message: 'the broker refused the credentials' } })
    expect(errors).toEqual([])
  })

  it('the harness leaves no chromium behind: close() ends the browser process', async () => {
    h = await Harness.create()
    const b = await Chromium.launch()
    const pid = b.pid
    expect(pid).toBeGreaterThan(0)
    await b.close()
    expect(() => process.kill(pid as number, 0)).toThrow()
  })

  it('the harness leaves no hung chromium behind: a browser that stopped answering (SIGSTOP) is killed by close(), and a page call on it rejects', async () => {
    h = await Harness.create()
    const site = await serveStatic({ '/index.html': '<!doctype html><meta charset="utf-8"><title>hung</title>' })
    h.onClose(() => site.close())
    const b = await Chromium.launch()
    const { page } = await b.open(site.origin)
    const pid = b.pid as number
    process.kill(pid, 'SIGSTOP')
    const call = page.evaluate(() => 1).then(() => 'answered', () => 'rejected')
    await b.close(2000)
    expect(() => process.kill(pid, 0)).toThrow()
    expect(await call).toBe('rejected')
  })
})

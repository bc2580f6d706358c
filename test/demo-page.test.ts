/**
 * The demo page (cli/web, served by demoPageHandler on the WebSocket port) in headless Chromium: it
 * loads the browser client bundle, logs in, and shows a service's events live, with their metadata;
 * a wrong password shows the typed error. And the page as `herald demo` serves it, from a real
 * process: it shows the gateway's events live. [CONN-WSC-7]
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { Proc } from './support/processes.js'
import { demoPageHandler, defaultBundleFile } from '../cli/src/web/demo-page.js'
import { Chromium } from './support/browser.js'
import { Harness } from './support/harness.js'
import { SECRETS } from './support/site.js'

describe('the demo page in headless Chromium', () => {
  let h: Harness
  let browser: Chromium | null = null
  afterEach(async () => {
    await browser?.close()
    browser = null
    await h.close()
  })

  it('shows a service\'s events live (event, service, position, payload, redelivered), online; a wrong password shows BAD_CREDENTIALS', async () => {
    const bundleFile = defaultBundleFile()
    expect(bundleFile, 'the browser client bundle (npm run build)').not.toBeNull()
    h = await Harness.create()
    const handler = demoPageHandler({ config: { events: ['readings'], user: 'alice', password: SECRETS.alice, clientName: 'demo-test', autoConnect: true }, bundleFile: bundleFile as string })
    // the page and MQTT over WebSocket on the broker's own listener, as `herald broker --ws-demo-page`
    const broker = await h.broker({ webSocket: { port: 0, httpHandler: handler } })
    const wsPort = (broker.webSocketListener as NonNullable<typeof broker.webSocketListener>).address.port
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 3; i++) await svc.raise('readings', { i })

    browser = await Chromium.launch()
    const origin = `http://127.0.0.1:${wsPort}`
    const { page, errors } = await browser.open(`${origin}/`)
    await page.waitForSelector('#status[data-state="online"]', { timeout: 30_000 })
    await page.waitForFunction(() => document.querySelectorAll('#events-table tr.event').length >= 3, undefined, { timeout: 30_000 })
    // one more, raised while the page is open: it appears without a reload
    await svc.raise('readings', { i: 3 })
    await page.waitForFunction(() => document.querySelectorAll('#events-table tr.event').length >= 4, undefined, { timeout: 30_000 })
    const rows = await page.$$eval('#events-table tr.event', (trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent ?? '').slice(1)))
    // newest first
    expect(rows.map((r) => r[0])).toEqual(['readings', 'readings', 'readings', 'readings'])
    expect(rows.map((r) => r[1])).toEqual(['svc-a', 'svc-a', 'svc-a', 'svc-a'])
    expect(rows.map((r) => r[3])).toEqual(['{"i":3}', '{"i":2}', '{"i":1}', '{"i":0}'])
    expect(rows.map((r) => r[4])).toEqual(['', '', '', ''])
    const positions = rows.map((r) => Number(r[2]))
    for (let i = 1; i < positions.length; i++) expect(positions[i - 1]).toBeGreaterThan(positions[i] as number)
    expect(await page.textContent('#counts')).toBe('4 events handled, 0 flagged redelivered')
    expect(await page.textContent('#status')).toContain(`online · ws://127.0.0.1:${wsPort}/mqtt`)
    expect(errors).toEqual([])

    // a wrong password: the typed error on the page, and the page stops retrying
    await page.fill('#password', 'wrong')
    await page.fill('#client-name', 'demo-test-2')
    await page.click('#connect')
    await page.waitForSelector('#error:not([hidden])', { timeout: 30_000 })
    expect(await page.textContent('#error')).toMatch(/^BAD_CREDENTIALS: .*refused the credentials of user "alice"/)
    await page.waitForSelector('#status[data-state="closed"]', { timeout: 30_000 })
  })

  it('`herald demo` serves the page on its WebSocket port and prints its URL; the page shows the simulated fleet\'s events live', async () => {
    const dir = await tempDir('herald-demo-page-')
    h = await Harness.create()
    h.onClose(() => dir.remove())
    const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js'), 'demo', '--port', '0', '--ws-port', '0', '--data', dir.path, '--no-summary'], {
      cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' }
    })
    const demo = new Proc(child, 'herald demo')
    h.onClose(() => demo.kill())
    await waitFor(() => /herald demo: demo page http:\/\/127\.0\.0\.1:\d+\//.test(demo.stderr), 'the demo page URL', 60_000)
    const url = /herald demo: demo page (http:\/\/127\.0\.0\.1:\d+\/)/.exec(demo.stderr)?.[1] as string

    browser = await Chromium.launch()
    const { page, errors } = await browser.open(url)
    await page.waitForSelector('#status[data-state="online"]', { timeout: 60_000 })
    await page.waitForFunction(() => document.querySelectorAll('#events-table tr.event').length >= 5, undefined, { timeout: 60_000 })
    const services = await page.$$eval('#events-table tr.event td.service', (tds) => [...new Set(tds.map((td) => td.textContent))])
    expect(services).toEqual(['plant-1'])
    const names = await page.$$eval('#events-table tr.event td.name', (tds) => tds.map((td) => td.textContent ?? ''))
    for (const n of names) expect(['temperature', 'heater', 'door-state', 'pump', 'tamper', 'alarms', 'readings']).toContain(n)
    expect(errors).toEqual([])
  })
})

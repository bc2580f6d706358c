/**
 * The broker's dashboard ([OPS-DASH-1..8]) in real headless Chromium against a real `herald broker`
 * process (`--metrics-port 0 --dashboard`, the example site, whose admin role is operator): the page
 * loads, a refused login and a non-admin are shown, an admin logs in, the numbers move while a real
 * service endpoint raises events, the tail shows them and its filter works at the server.
 * HERALD_DASHBOARD_SCREENSHOT=<file> also saves a screenshot of the page (docs/dashboard.png).
 */
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { eventsOfService } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { loadSite } from '@herald/node-runtime'
import { tempDir } from '@herald/node-runtime/testing'
import { ClientEndpoint } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { Proc, startBrokerProcess, startGatewayProcess } from './support/processes.js'
import { freePort } from './support/ports.js'
import { Chromium } from './support/browser.js'

const ROOT = join(import.meta.dirname, '..')
const SITE = join(ROOT, 'examples', 'site.yaml')

/**
 * A real gateway (examples/gateway.yaml as plant-1) on a simulated thermostat and door, serving its
 * metrics on `metricsPort`; its lines' URLs come from `herald sim`.
 */
async function startFleet (dir: string, brokerUrl: string, metricsPort: number, cleanups: Array<() => Promise<void>>): Promise<void> {
  const sim = new Proc(spawn(process.execPath, [join(ROOT, 'cli', 'bin', 'herald.js'), 'sim', '--devices', 'thermostat:1,door:1', '--link', 'tcp:0', '--rate', '2/s'], { stdio: ['ignore', 'pipe', 'pipe'] }), 'sim')
  cleanups.push(() => sim.kill())
  const url = async (model: string): Promise<string> => /tcp:\/\/\S+/.exec(await sim.waitLine((l) => l.startsWith(`${model} `)))?.[0] as string
  const [thermostat, door] = [await url('thermostat'), await url('door')]
  const example = await readFile(join(ROOT, 'examples', 'gateway.yaml'), 'utf8')
  const mapping = example.slice(example.indexOf('\nmapping:') + 1)
  const config = join(dir, 'gateway.yaml')
  await writeFile(config, `service:
  id: plant-1
  secret: plant-secret-1
broker: ${brokerUrl}
data: ${join(dir, 'gateway-data')}
site: ${SITE}
metrics:
  port: ${metricsPort}
devices:
  - { name: thermostat-1, url: '${thermostat}', model: thermostat }
  - { name: door-1, url: '${door}', model: door }
${mapping}`)
  const gateway = await startGatewayProcess(config)
  cleanups.push(() => gateway.kill())
}

describe('the broker dashboard in headless Chromium', () => {
  const cleanups: Array<() => Promise<void>> = []
  let browser: Chromium | null = null
  afterEach(async () => {
    await browser?.close()
    browser = null
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('loads, shows a refused login and a non-admin, logs an admin in, moves its numbers while events flow, and filters its tail', async () => {
    const dir = await tempDir('herald-dashboard-')
    cleanups.push(() => dir.remove())
    const gatewayMetrics = await freePort()
    const { proc, url } = await startBrokerProcess(SITE, join(dir.path, 'data'), 0, [
      '--metrics-port', '0', '--dashboard', '--dashboard-gateway', `http://127.0.0.1:${gatewayMetrics}/metrics`, '--dashboard-gateway', `http://127.0.0.1:${await freePort()}/metrics`
    ])
    cleanups.push(() => proc.kill())
    const line = await proc.waitLine((l) => l.startsWith('herald broker dashboard on '))
    const dashboardUrl = line.slice('herald broker dashboard on '.length)
    expect(dashboardUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/admin$/)

    await startFleet(dir.path, url, gatewayMetrics, cleanups)
    const site = await loadSite(SITE)
    const svc = new ServiceEndpoint({ url, serviceId: 'boiler-1', secret: 'boiler-secret-1', events: eventsOfService(site, 'boiler-1'), reconnectInitialMs: 20, reconnectMaxMs: 200 })
    cleanups.push(() => svc.close())
    svc.start()
    const client = new ClientEndpoint({ url, clientName: 'dashboard-test', user: 'alice', password: 'alice-password', reconnectInitialMs: 20, reconnectMaxMs: 200 })
    cleanups.push(() => client.close())
    client.start()
    await client.subscribe('readings', { start: 'all' }, () => { /* read */ })

    browser = await Chromium.launch()
    const { page, errors } = await browser.open(dashboardUrl)
    await page.setViewportSize({ width: 1280, height: 1000 })
    await page.waitForSelector('#login-form', { state: 'visible', timeout: 30_000 })

    // an unknown user and a wrong password: one message; a user without an admin role: another
    const tryLogin = async (user: string, password: string): Promise<string> => {
      await page.fill('#login-user', user)
      await page.fill('#login-password', password)
      await page.click('#login-submit')
      await page.waitForSelector('#login-error:not([hidden])', { timeout: 30_000 })
      const text = (await page.textContent('#login-error')) ?? ''
      await page.evaluate(() => { (document.getElementById('login-error') as HTMLElement).hidden = true })
      return text
    }
    expect(await tryLogin('mallory', 'some-password')).toBe('wrong user name or password')
    expect(await tryLogin('alice', 'not-her-password')).toBe('wrong user name or password')
    expect(await tryLogin('bob', 'bob-password')).toMatch(/user bob has no admin role/)
    expect(await page.isVisible('#dashboard')).toBe(false)

    await page.fill('#login-user', 'alice')
    await page.fill('#login-password', 'alice-password')
    await page.click('#login-submit')
    await page.waitForSelector('#dashboard', { state: 'visible', timeout: 30_000 })
    expect(await page.textContent('#user')).toBe('alice')

    // events flow: the rate, the stored count and the tail move
    let flowing = true
    let i = 0
    const flow = (async () => {
      while (flowing) {
        const batch = []
        for (let k = 0; k < 20; k++) batch.push(svc.raise('readings', { i: i++, celsius: 20 + (i % 7) }))
        batch.push(svc.raise('temperature', { celsius: 20 + (i % 5) }))
        await Promise.all(batch)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    })()
    cleanups.push(async () => { flowing = false; await flow })
    const num = async (sel: string): Promise<number> => Number(((await page.textContent(sel)) ?? '').replace(/,/g, ''))
    await waitFor(async () => (await num('#rate-in')) > 0, 'a rate in above 0', 60_000)
    const stored1 = await num('#stored-events')
    await waitFor(async () => (await num('#stored-events')) > stored1, 'the stored count to grow', 60_000)
    await waitFor(async () => (await num('#rate-out')) > 0, 'a rate out above 0 (the client reads)', 60_000)
    await page.waitForFunction(() => Array.from(document.querySelectorAll<HTMLElement>('#tail tbody tr')).some((tr) => tr.children[2]?.textContent === 'readings'), undefined, { timeout: 30_000 })
    await page.waitForFunction(() => Array.from(document.querySelectorAll<HTMLElement>('#events tbody tr')).some((tr) => tr.children[0]?.textContent === 'readings'), undefined, { timeout: 30_000 })
    expect(await page.textContent('#services')).toContain('boiler-1')
    await page.waitForFunction(() => (document.querySelector('#clients tbody')?.textContent ?? '').includes('alice/dashboard-test'), undefined, { timeout: 30_000 })
    // the gateway with its device lines up; the second one named on the command line is not there: down
    await page.waitForFunction(() => {
      const rows = Array.from(document.querySelectorAll<HTMLElement>('#gateways tbody tr'), (tr) => tr.textContent ?? '')
      return rows.length === 2 && rows[0]?.includes('thermostat-1 up') === true && rows[0].includes('door-1 up') && /down: .*ECONNREFUSED/.test(rows[1] ?? '')
    }, undefined, { timeout: 60_000 })
    // the chart has points
    await page.waitForFunction(() => (document.getElementById('line-in')?.getAttribute('points') ?? '').split(' ').length >= 2, undefined, { timeout: 30_000 })

    // the filter: only temperature events in the tail
    await page.fill('#filter-event', 'temperature')
    await page.click('#filter button')
    await page.waitForFunction(() => {
      const rows = Array.from(document.querySelectorAll<HTMLElement>('#tail tbody tr'))
      return rows.length > 0 && rows.every((tr) => tr.children[2]?.textContent === 'temperature')
    }, undefined, { timeout: 30_000 })
    const screenshot = process.env.HERALD_DASHBOARD_SCREENSHOT
    if (screenshot !== undefined && screenshot !== '') {
      await page.fill('#filter-event', '')
      await page.click('#filter button')
      await page.waitForFunction(() => Array.from(document.querySelectorAll<HTMLElement>('#tail tbody tr')).some((tr) => tr.children[2]?.textContent === 'readings'), undefined, { timeout: 30_000 })
      // some history in the chart
      await waitFor(async () => parseInt((await page.textContent('#history-span')) ?? '0', 10) >= 30, 'a chart of 30 s', 120_000)
      await page.screenshot({ path: screenshot, fullPage: false })
    }

    // logout: back to the login form
    await page.click('#logout')
    await page.waitForSelector('#login-form', { state: 'visible', timeout: 30_000 })
    // the refused logins answer 401 and 403, and a feed closed for a new filter is aborted: nothing else
    expect(errors.filter((e) => !/status of 40[13] /.test(e) && !/\/admin\/feed.* net::ERR_ABORTED$/.test(e))).toEqual([])
  }, 240_000)
})

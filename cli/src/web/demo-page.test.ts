import { writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { tempDir } from '@herald/node-runtime/testing'
import { demoPageHandler, demoPageUrl, type DemoPageOptions } from './demo-page.js'

describe('the demo page handler', () => {
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c()
  })

  /** A server that gives every request to the handler first, and answers 404 for what it leaves. */
  async function serve (options: DemoPageOptions): Promise<string> {
    const handler = demoPageHandler(options)
    const server: Server = createServer((req, res) => {
      if (!handler(req, res)) res.writeHead(404, { 'Content-Type': 'text/plain' }).end('left to the listener\n')
    })
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    closers.push(() => new Promise<void>((resolve) => { server.close(() => { resolve() }) }))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  it('serves the page, its script and style, its config, and the bundle; leaves everything else to the listener', async () => {
    const dir = await tempDir('herald-demo-page-')
    closers.push(dir.remove)
    const bundleFile = join(dir.path, 'herald-client.js')
    await writeFile(bundleFile, 'export const ClientEndpoint = 1\n')
    await writeFile(`${bundleFile}.map`, '{"version":3}')
    const base = await serve({ config: { events: ['temperature', 'alarms'], user: 'alice' }, bundleFile })

    const page = await fetch(`${base}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8')
    expect(page.headers.get('content-security-policy')).toContain("connect-src 'self'")
    const html = await page.text()
    expect(html).toContain('<script type="module" src="demo.js"></script>')
    expect(await (await fetch(`${base}/index.html`)).text()).toBe(html)

    const script = await fetch(`${base}/demo.js`)
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8')
    expect(await script.text()).toContain("from './herald-client.js'")
    expect((await fetch(`${base}/demo.css`)).headers.get('content-type')).toBe('text/css; charset=utf-8')

    expect(await (await fetch(`${base}/demo-config.json`)).json()).toEqual({ events: ['temperature', 'alarms'], user: 'alice' })
    expect(await (await fetch(`${base}/herald-client.js`)).text()).toBe('export const ClientEndpoint = 1\n')
    expect(await (await fetch(`${base}/herald-client.js.map`)).text()).toBe('{"version":3}')

    expect((await fetch(`${base}/favicon.ico`)).status).toBe(204)
    const other = await fetch(`${base}/mqtt`)
    expect(other.status).toBe(404)
    expect(await other.text()).toBe('left to the listener\n')
    expect((await fetch(`${base}/`, { method: 'POST', body: 'x' })).status).toBe(404)
    expect((await fetch(`${base}/../../package.json`)).status).toBe(404)
    expect((await fetch(`${base}//demo-config.json`)).status).toBe(404)
    expect(await (await fetch(`${base}/demo-config.json?x=1`)).json()).toEqual({ events: ['temperature', 'alarms'], user: 'alice' })
    const head = await fetch(`${base}/demo.js`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(await head.text()).toBe('')
  })

  it('a missing bundle is a 503 that says to build it (and is looked for again on the next request)', async () => {
    const dir = await tempDir('herald-demo-page-')
    closers.push(dir.remove)
    const bundleFile = join(dir.path, 'herald-client.js')
    const base = await serve({ config: { events: [] }, bundleFile })
    const missing = await fetch(`${base}/herald-client.js`)
    expect(missing.status).toBe(503)
    expect(await missing.text()).toMatch(/missing: run npm run build/)
    await writeFile(bundleFile, 'built\n')
    expect(await (await fetch(`${base}/herald-client.js`)).text()).toBe('built\n')
  })

  it('the page\'s URL on a WebSocket listener', () => {
    expect(demoPageUrl('ws://127.0.0.1:8083/mqtt')).toBe('http://127.0.0.1:8083/')
    expect(demoPageUrl('wss://[::1]:443/mqtt')).toBe('https://[::1]/')
  })
})

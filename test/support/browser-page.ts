/**
 * For the browser client test: a page server on loopback (the page, its bundle built with esbuild from
 * the sources, and MQTT over WebSocket at /mqtt bridged to the broker — its WebSocket listener, or
 * its TCP port — so the test can cut every WebSocket at once), and headless Chromium (Debian's /usr/bin/chromium) driven by puppeteer-core.
 */
import { createServer, type Server } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { build } from 'esbuild'
import puppeteer, { type Browser } from 'puppeteer-core'
import { WebSocket as WsClient, WebSocketServer, type WebSocket } from 'ws'

const ROOT = join(import.meta.dirname, '..', '..')
export const CHROMIUM = '/usr/bin/chromium'

/** Bundles a page script (TypeScript, workspace packages from their sources) for the browser. */
export async function bundlePage (entry: string): Promise<string> {
  const out = await build({
    entryPoints: [join(ROOT, entry)],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['source'],
    write: false,
    logLevel: 'warning'
  })
  return out.outputFiles[0]!.text
}

export interface PageServer {
  readonly url: string
  /** `ws://…/mqtt` of the bridge. */
  readonly wsUrl: string
  /** Closes every bridged WebSocket now (as a network cut); new ones are accepted. */
  cut (): number
  close (): Promise<void>
}

/**
 * Where the page server's `/mqtt` leads: the broker's MQTT over TCP (the bytes of each WebSocket
 * message), or the broker's own WebSocket listener (`herald broker --ws-port`), message for message.
 */
export type Upstream = { readonly tcpPort: number } | { readonly wsUrl: string }

/** Serves `/` (a page loading `/page.js`) and bridges `/mqtt` WebSockets to the broker (`upstream`). */
export async function startPageServer (script: string, upstream: Upstream): Promise<PageServer> {
  const html = '<!doctype html><meta charset="utf-8"><title>herald browser test</title><script type="module" src="/page.js"></script>'
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    if (path === '/') res.writeHead(200, { 'content-type': 'text/html' }).end(html)
    else if (path === '/page.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(script)
    else res.writeHead(404).end()
  })
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => protocols.has('mqtt') ? 'mqtt' : false })
  const pairs = new Set<{ ws: WebSocket, up: { destroy: () => void } }>()
  server.on('upgrade', (req, socket, head) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/mqtt') {
      socket.destroy()
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      if ('tcpPort' in upstream) bridgeTcp(ws, upstream.tcpPort)
      else bridgeWs(ws, upstream.wsUrl)
    })
  })
  const bridgeTcp = (ws: WebSocket, port: number): void => {
    const tcp: Socket = connect(port, '127.0.0.1')
    const pair = { ws, up: { destroy: () => { tcp.destroy() } } }
    pairs.add(pair)
    const end = (): void => {
      pairs.delete(pair)
      ws.terminate()
      tcp.destroy()
    }
    ws.on('message', (data: Buffer) => { tcp.write(data) })
    tcp.on('data', (d) => { ws.send(d) })
    ws.on('close', end)
    ws.on('error', end)
    tcp.on('close', end)
    tcp.on('error', end)
  }
  const bridgeWs = (ws: WebSocket, url: string): void => {
    const up = new WsClient(url, 'mqtt')
    const early: Buffer[] = []
    const pair = { ws, up: { destroy: () => { up.terminate() } } }
    pairs.add(pair)
    const end = (): void => {
      pairs.delete(pair)
      ws.terminate()
      up.terminate()
    }
    ws.on('message', (data: Buffer) => {
      if (up.readyState === WsClient.OPEN) up.send(data)
      else early.push(data)
    })
    up.on('open', () => { for (const d of early.splice(0)) up.send(d) })
    up.on('message', (d: Buffer) => { ws.send(d) })
    ws.on('close', end)
    ws.on('error', end)
    up.on('close', end)
    up.on('error', end)
  }
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const port = (server.address() as { port: number }).port
  return {
    url: `http://127.0.0.1:${port}/`,
    wsUrl: `ws://127.0.0.1:${port}/mqtt`,
    cut () {
      const n = pairs.size
      for (const p of [...pairs]) {
        p.ws.terminate()
        p.up.destroy()
      }
      return n
    },
    async close () {
      for (const p of [...pairs]) { p.ws.terminate(); p.up.destroy() }
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}

/** Headless Chromium with a profile of its own (a fresh IndexedDB and Web Locks per test file). */
export async function launchChromium (): Promise<Browser> {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    protocolTimeout: 120_000
  })
}

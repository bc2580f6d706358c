/**
 * The demo page ([CONN-WSC-7]): a static page (cli/web: index.html, demo.js, demo.css) that shows
 * events live in a browser with the browser client (@herald/client-endpoint/browser's bundle,
 * herald-client.js), served on the broker's WebSocket port through the WebSocket listener's
 * `httpHandler`, so that the page and `/mqtt` share one origin. `herald demo` serves it with its
 * example user; `herald broker --ws-demo-page` with the site's events and no credentials.
 */
import { readFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { fileURLToPath } from 'node:url'

/** What the page reads from /demo-config.json. */
export interface DemoPageConfig {
  /** The events the page subscribes to (a comma-separated field the user may change). */
  readonly events: readonly string[]
  /** A user (and password) to fill in: only for the example site of `herald demo`. */
  readonly user?: string | undefined
  readonly password?: string | undefined
  readonly clientName?: string | undefined
  /** Connect on load (with the user above). Default false. */
  readonly autoConnect?: boolean | undefined
  /** The broker's WebSocket URL; default the page's own host, path /mqtt. */
  readonly url?: string | undefined
}

export interface DemoPageOptions {
  /** The page's settings, or a function giving them at each request (so that they follow a site reload). */
  readonly config: DemoPageConfig | (() => DemoPageConfig)
  /** The browser client bundle. Default the one @herald/client-endpoint ships (dist/browser/herald-client.js). */
  readonly bundleFile?: string | undefined
}

/** The page's own files, in cli/web (beside src/ and dist/, shipped with the package). */
const WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url))

const PAGE_FILES: Readonly<Record<string, { file: string, type: string }>> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/demo.js': { file: 'demo.js', type: 'text/javascript; charset=utf-8' },
  '/demo.css': { file: 'demo.css', type: 'text/css; charset=utf-8' }
}

/** The demo page's URL on a WebSocket listener: `ws://host:port/mqtt` -> `http://host:port/` (`wss://` -> `https://`). */
export function demoPageUrl (webSocketUrl: string): string {
  const u = new URL(webSocketUrl)
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:'
  u.pathname = '/'
  u.search = ''
  return u.toString()
}

/** Where the browser client bundle is, or null if @herald/client-endpoint does not export one (not built). */
export function defaultBundleFile (): string | null {
  try {
    return fileURLToPath(import.meta.resolve('@herald/client-endpoint/browser/herald-client.js'))
  } catch {
    return null
  }
}

/**
 * A handler for the WebSocket listener's plain HTTP requests: GET or HEAD of `/`, `/index.html`,
 * `/demo.js`, `/demo.css`, `/demo-config.json`, `/herald-client.js` (and its `.map`), `/favicon.ico`
 * (204); returns false
 * for anything else (the listener answers 404). Files are read once and kept (a few hundred KiB).
 */
export function demoPageHandler (options: DemoPageOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { config } = options
  const configBody = typeof config === 'function' ? null : JSON.stringify(config)
  const bundle = options.bundleFile ?? defaultBundleFile()
  const cache = new Map<string, Promise<Buffer>>()
  const load = (file: string): Promise<Buffer> => {
    let p = cache.get(file)
    if (p === undefined) {
      p = readFile(file)
      // a missing file (a bundle not built yet) is read again on the next request
      p.catch(() => { cache.delete(file) })
      cache.set(file, p)
    }
    return p
  }
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    // the path as sent, without its query (not through new URL: '//x' would read as a host)
    const target = req.url ?? '/'
    const q = target.indexOf('?')
    const path = q === -1 ? target : target.slice(0, q)
    const headers = {
      'Cache-Control': 'no-cache',
      'X-Content-Type-Options': 'nosniff',
      // the page talks only to its own origin (the WebSocket on /mqtt included)
      'Content-Security-Policy': "default-src 'self'; connect-src 'self'; img-src 'self' data:"
    }
    const send = (status: number, type: string, body: string | Buffer): void => {
      res.writeHead(status, { ...headers, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) })
      res.end(req.method === 'HEAD' ? undefined : body)
    }
    if (path === '/favicon.ico') {
      // asked for by every page: no icon, and no 404 in the page's console
      res.writeHead(204, headers).end()
      return true
    }
    if (path === '/demo-config.json') {
      send(200, 'application/json', configBody ?? JSON.stringify((config as () => DemoPageConfig)()))
      return true
    }
    let file: string | null
    let type: string
    const page = PAGE_FILES[path]
    if (page !== undefined) {
      file = WEB_DIR + page.file
      type = page.type
    } else if (path === '/herald-client.js' || path === '/herald-client.js.map') {
      file = bundle === null ? null : path.endsWith('.map') ? `${bundle}.map` : bundle
      type = path.endsWith('.map') ? 'application/json' : 'text/javascript; charset=utf-8'
    } else {
      return false
    }
    if (file === null) {
      send(503, 'text/plain; charset=utf-8', 'the browser client bundle is not built: run npm run build (it writes client-endpoint/dist/browser/herald-client.js)\n')
      return true
    }
    const f = file
    load(f).then((body) => { send(200, type, body) }, () => {
      send(path.startsWith('/herald-client') ? 503 : 404, 'text/plain; charset=utf-8', path.startsWith('/herald-client')
        ? `the browser client bundle ${f} is missing: run npm run build\n`
        : `not found: ${path}\n`)
    })
    return true
  }
}

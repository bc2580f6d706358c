/**
 * Real headless Chromium for browser tests: Debian's /usr/bin/chromium (the `chromium` package, in
 * prerequisites.mjs) driven by playwright-core, which downloads no browser of its own. Pages come
 * from a local HTTP server on port 0 (`serveStatic`); every page's console errors, uncaught errors
 * and failed requests are collected, so a test can assert that there were none. `close()` ends the
 * browser, and SIGKILLs its process if it does not go within a few seconds: no chromium outlives a
 * test, passed or failed (call it from afterEach or afterAll). `bundle` builds a page's script from
 * the workspace's TypeScript sources with esbuild.
 */
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { extname, join } from 'node:path'
import { build } from 'esbuild'
import { chromium as playwright, type Browser, type BrowserContext, type BrowserServer, type Page } from 'playwright-core'

const ROOT = join(import.meta.dirname, '..', '..')

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM_PATH = process.env.HERALD_CHROMIUM ?? '/usr/bin/chromium'

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json'
}

/**
 * Bundles a page's script for the browser (ESM, es2022), the workspace packages from their
 * TypeScript sources (as vitest resolves them): `entry` a file under the repository root, or the
 * `contents` of one resolved from there. A Node built-in anywhere in it fails the build.
 */
export async function bundle (entry: string | { readonly contents: string, readonly sourcefile: string }): Promise<string> {
  const out = await build({
    ...(typeof entry === 'string'
      ? { entryPoints: [join(ROOT, entry)] }
      : { stdin: { contents: entry.contents, resolveDir: ROOT, loader: 'ts' as const, sourcefile: entry.sourcefile } }),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['source'],
    write: false,
    logLevel: 'silent'
  })
  return out.outputFiles[0]?.text ?? ''
}

/** A file served: its content, or `{ file }` read from disk on each request (a bundle built by the test). */
export type StaticFile = string | Uint8Array | { readonly file: string }

export interface StaticServer {
  /** `http://127.0.0.1:<port>`. */
  readonly origin: string
  /** Requests served, by path (for asserting what a page loaded). */
  readonly served: string[]
  close (): Promise<void>
}

/** Serves `files` (`'/index.html' -> content`) on 127.0.0.1, port 0; `/` is `/index.html`; `/favicon.ico` 204; anything else 404. */
export async function serveStatic (files: Readonly<Record<string, StaticFile>>): Promise<StaticServer> {
  const served: string[] = []
  const server: Server = createServer((req, res) => {
    // the path as sent, without its query (not through new URL: '//x' would read as a host)
    const target = req.url ?? '/'
    const q = target.indexOf('?')
    const path = q === -1 ? target : target.slice(0, q)
    const name = path === '/' ? '/index.html' : path
    const f = files[name]
    if (f === undefined && name === '/favicon.ico') {
      // asked for by every page; a 404 would be a console error
      res.writeHead(204).end()
      return
    }
    if (f === undefined || req.method !== 'GET') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n')
      return
    }
    served.push(name)
    void (async () => {
      try {
        const body = typeof f === 'string' || f instanceof Uint8Array ? f : await readFile(f.file)
        res.writeHead(200, { 'Content-Type': TYPES[extname(name)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' }).end(body)
      } catch (err) {
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${String(err)}\n`)
      }
    })()
  })
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => { sockets.delete(s) }) })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    served,
    close: () => new Promise<void>((resolve) => {
      server.close(() => { resolve() })
      for (const s of sockets) s.destroy()
    })
  }
}

/** A page and what went wrong on it. */
export interface OpenedPage {
  readonly page: Page
  /** Console messages of type error, uncaught exceptions and failed requests, in order. */
  readonly errors: string[]
  /** Every console message, `type: text`. */
  readonly console: string[]
}

/** One headless Chromium. */
export class Chromium {
  private constructor (private readonly server: BrowserServer, readonly browser: Browser) {}

  /** Launches Debian's chromium (as root it needs --no-sandbox); rejects within `timeoutMs`. */
  static async launch (timeoutMs = 60_000): Promise<Chromium> {
    const server = await playwright.launchServer({
      executablePath: CHROMIUM_PATH,
      headless: true,
      timeout: timeoutMs,
      args: [
        ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
        '--disable-dev-shm-usage',
        '--disable-gpu'
      ]
    })
    try {
      const browser = await playwright.connect(server.wsEndpoint(), { timeout: timeoutMs })
      return new Chromium(server, browser)
    } catch (err) {
      await server.kill()
      throw err
    }
  }

  /** The browser's process id (to check that it is gone). */
  get pid (): number | undefined {
    return this.server.process().pid
  }

  /** A browser context: pages opened in it share its storage (IndexedDB, Web Locks), as tabs of one profile. */
  async newContext (): Promise<BrowserContext> {
    return this.browser.newContext()
  }

  /**
   * Opens `url` in a new page, collecting its errors: in `context` (tabs sharing storage), else in a
   * fresh context of its own. `setup` runs on the page before it loads (page.exposeFunction, say).
   */
  async open (url: string, options: { timeoutMs?: number, context?: BrowserContext, setup?: (page: Page) => Promise<void> } = {}): Promise<OpenedPage> {
    const context = options.context ?? await this.browser.newContext()
    const page = await context.newPage()
    const errors: string[] = []
    const console: string[] = []
    page.on('console', (m) => {
      console.push(`${m.type()}: ${m.text()}`)
      if (m.type() === 'error') errors.push(`console.error: ${m.text()}`)
    })
    page.on('pageerror', (e) => { errors.push(`uncaught: ${e.message}`) })
    page.on('requestfailed', (r) => { errors.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`) })
    await options.setup?.(page)
    await page.goto(url, { timeout: options.timeoutMs ?? 30_000 })
    return { page, errors, console }
  }

  /** Closes the browser; SIGKILL if it has not exited within `graceMs`. */
  async close (graceMs = 5000): Promise<void> {
    const proc = this.server.process()
    const exited = proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => { proc.once('exit', () => { resolve() }) })
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'late'>((resolve) => { timer = setTimeout(() => { resolve('late') }, graceMs) })
    try {
      const r = await Promise.race([
        (async () => {
          await this.browser.close().catch(() => {})
          await this.server.close()
          await exited
        })(),
        deadline
      ])
      if (r === 'late') await this.server.kill()
    } finally {
      clearTimeout(timer)
      if (proc.exitCode === null && proc.signalCode === null) await this.server.kill()
    }
  }
}

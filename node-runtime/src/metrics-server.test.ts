import { connect, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, ErrorCode } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { startMetricsServer, type MetricsServer } from './metrics-server.js'

/** Sends raw bytes and resolves with everything the server wrote before it closed. */
function raw (port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1')
    let got = ''
    s.on('data', (d: Buffer) => { got += d.toString('latin1') })
    s.on('error', reject)
    s.on('close', () => { resolve(got) })
    s.write(text)
  })
}

describe('metrics server [OPS-METRICS-1], [OPS-METRICS-2]', () => {
  const servers: MetricsServer[] = []
  const sockets: Socket[] = []
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy()
    for (const s of servers.splice(0)) await s.close()
  })
  async function start (ready: () => string | null, more: { maxConnections?: number, requestTimeoutMs?: number } = {}): Promise<MetricsServer> {
    const s = await startMetricsServer({ port: 0, ready, metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: 'm 1\n' }), ...more })
    servers.push(s)
    return s
  }

  it('serves /metrics, /healthz, /readyz (503 with a one-line reason), 404 elsewhere, 405 for other methods', async () => {
    let problem: string | null = null
    const s = await start(() => problem)
    expect(s.url).toBe(`http://127.0.0.1:${s.port}`)
    const m = await fetch(`${s.url}/metrics`)
    expect([m.status, m.headers.get('content-type'), await m.text()]).toEqual([200, 'text/plain; version=0.0.4', 'm 1\n'])
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200)
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200)
    problem = 'the last commit failed: disk full'
    const r = await fetch(`${s.url}/readyz`)
    const body = await r.text()
    expect([r.status, JSON.parse(body)]).toEqual([503, { status: 'not ready', reason: problem }])
    expect(body.trimEnd().includes('\n')).toBe(false)
    problem = null
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200)
    expect((await fetch(`${s.url}/metricsx`)).status).toBe(404)
    expect((await fetch(`${s.url}/healthz`, { method: 'PUT', body: 'x' })).status).toBe(405)
  })

  it('refuses an oversized request head (431) and closes a request that does not finish in time', async () => {
    const s = await start(() => null, { requestTimeoutMs: 300 })
    expect(await raw(s.port, `GET /metrics HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(10_000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431 /)
    // a head never finished: answered 408 once the timeout ran out, and closed, not held open
    expect(await raw(s.port, 'GET /metrics HTTP/1.1\r\nhost: x\r\n')).toMatch(/^HTTP\/1\.1 408 /)
  })

  it('holds at most maxConnections connections: more are closed at once', async () => {
    const s = await start(() => null, { maxConnections: 2 })
    for (let i = 0; i < 2; i++) {
      const c = connect(s.port, '127.0.0.1')
      sockets.push(c)
      await new Promise((resolve) => c.once('connect', resolve))
    }
    // the third is closed unserved
    expect(await raw(s.port, 'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n')).toBe('')
    for (const c of sockets.splice(0)) c.destroy()
    await waitFor(async () => (await fetch(`${s.url}/healthz`).then((r) => r.status, () => 0)) === 200, 'a slot free again')
  })

  it('checks its options, and names a busy port', async () => {
    await expect(startMetricsServer({ port: 0, maxConnections: 0, ready: () => null, metrics: async () => ({ contentType: 'x', body: '' }) })).rejects.toThrow(/option "maxConnections" must be a whole number from 1/)
    const s = await start(() => null)
    const busy = await startMetricsServer({ port: s.port, ready: () => null, metrics: async () => ({ contentType: 'x', body: '' }) }).catch((e: unknown) => e)
    expect(busy).toBeInstanceOf(ConfigError)
    expect(busy).toMatchObject({ code: ErrorCode.ADDRESS_IN_USE, message: expect.stringContaining(`metrics port ${s.port}`) as unknown })
  })
})

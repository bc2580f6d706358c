/**
 * [OPS-DASH-3] The dashboard off loopback: refused over plain HTTP (admin passwords would cross the
 * network in the clear) unless insecure; served over HTTPS with the broker's certificate, its
 * cookie Secure. Real broker servers, real certificates (openssl).
 */
import { readFile } from 'node:fs/promises'
import { request } from 'node:https'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, type Site } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { makeTestCa, tempDir } from '@herald/node-runtime/testing'
import { startBrokerServer, type BrokerServer } from '../server.js'

const site = (): Promise<Site> => parseSite({
  admin: { roles: ['operator'] },
  events: [{ name: 'readings', category: 'queueing', lifetime: '1d', maxQueueSize: 1000, access: 'everyone' }],
  services: [{ id: 'svc', secret: 'svc-secret-1', events: ['readings'] }],
  users: [{ name: 'alice', password: 'alice-password', roles: ['operator'] }]
})

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function dir (): Promise<string> {
  const d = await tempDir('herald-dashboard-server-')
  cleanups.push(() => d.remove())
  return d.path
}

describe('the dashboard off loopback [OPS-DASH-3]', () => {
  it('is refused over plain HTTP on a non-loopback metrics host, and without a metrics listener', async () => {
    const d = await dir()
    await expect(startBrokerServer({ site: await site(), dataDir: join(d, 'a'), port: 0, metrics: { port: 0, host: '0.0.0.0' }, dashboard: {} }))
      .rejects.toThrow(/refusing to serve the dashboard on 0\.0\.0\.0 over plain HTTP/)
    await expect(startBrokerServer({ site: await site(), dataDir: join(d, 'b'), port: 0, dashboard: {} })).rejects.toThrow(ConfigError)
    await expect(startBrokerServer({ site: await site(), dataDir: join(d, 'c'), port: 0, metrics: { port: 0, maxConnections: 4 }, dashboard: { maxFeeds: 4 } }))
      .rejects.toThrow(/maxFeeds \(4\) must be below the metrics listener's maxConnections \(4\)/)
  })

  it('is served over HTTPS with the broker\'s certificate there, its session cookie Secure', async () => {
    const d = await dir()
    const ca = await makeTestCa(d, 'ca')
    const cert = await ca.issueServer('broker')
    const server: BrokerServer = await startBrokerServer({
      site: await site(), dataDir: join(d, 'data'), port: 0, tls: { certFile: cert.certFile, keyFile: cert.keyFile },
      metrics: { port: 0, host: '0.0.0.0' }, dashboard: {}
    })
    cleanups.push(() => server.close())
    expect(server.metricsUrl).toMatch(/^https:\/\/0\.0\.0\.0:\d+$/)
    const port = new URL(server.metricsUrl as string).port
    const origin = `https://127.0.0.1:${port}`
    const caPem = await readFile(ca.certFile)
    const answer = await new Promise<{ status: number, cookie: string }>((resolve, reject) => {
      const req = request(`${origin}/admin/login`, { method: 'POST', ca: caPem, headers: { origin, 'content-type': 'application/json' } }, (res) => {
        res.resume()
        res.on('end', () => { resolve({ status: res.statusCode ?? 0, cookie: (res.headers['set-cookie'] ?? [])[0] ?? '' }) })
      })
      req.on('error', reject)
      req.end(JSON.stringify({ user: 'alice', password: 'alice-password' }))
    })
    expect(answer.status).toBe(200)
    expect(answer.cookie).toMatch(/; HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/)
    expect(server.dashboard).not.toBeNull()
  })
})

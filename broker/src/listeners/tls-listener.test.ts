import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type HeraldError, ConfigError, type Site, Link } from '@herald/protocol'
;
import { mqttTransport, parseSite, readTlsClientFiles, type TlsClientOptions } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { makeTestCa, tempDir, type CertFiles, type TestCa } from '@herald/node-runtime/testing'
import { isLoopbackHost, startBrokerServer, type BrokerServer, type BrokerServerOptions } from '../server.js'

let dir: { path: string, remove: () => Promise<void> }
let site: Site
let ca: TestCa
let otherCa: TestCa
let server: CertFiles
let client: CertFiles
let strangerClient: CertFiles
const servers: BrokerServer[] = []
const links: Link[] = []

beforeAll(async () => {
  dir = await tempDir('herald-tls-')
  site = await parseSite({ allowNoEvents: true, users: [{ name: 'alice', password: 'alice-password' }] })
  ca = await makeTestCa(dir.path, 'ca')
  otherCa = await makeTestCa(dir.path, 'other-ca')
  server = await ca.issueServer('server')
  client = await ca.issueClient('client', 'alice')
  strangerClient = await otherCa.issueClient('stranger', 'alice')
})

afterAll(async () => {
  for (const l of links) await l.close()
  for (const s of servers) await s.close()
  await dir.remove()
})

let n = 0
async function broker (options: Partial<BrokerServerOptions> = {}): Promise<BrokerServer> {
  const s = await startBrokerServer({ site, dataDir: join(dir.path, `data-${++n}`), port: 0, ...options })
  servers.push(s)
  return s
}

/** A client's MQTT connection, as the endpoints make it; resolves `online`, or the error of the first failed attempt. */
function attempt (url: string, tls?: TlsClientOptions, password = 'alice-password'): Promise<{ online: true } | { online: false, error: HeraldError | null }> {
  const link = new Link({
    transport: mqttTransport(tls),
    url,
    clientId: `c/alice/tls-${++n}`,
    username: 'alice',
    password,
    replyTopic: `herald/c/alice/tls-${n}/msg`,
    reconnect: { initialMs: 60_000, maxMs: 60_000 },
    connectTimeoutMs: 10_000,
    keepaliveSec: 30
  })
  links.push(link)
  return new Promise((resolve) => {
    link.once('online', () => { resolve({ online: true }) })
    link.once('offline', (error) => { resolve({ online: false, error }) })
    link.start()
  })
}

const caOnly = (): TlsClientOptions => readTlsClientFiles({ ca: ca.certFile })

describe('TLS listener [CONN-TLS-1]', () => {
  it('serves mqtts:// to a client that trusts its CA, and counts no handshake failure', async () => {
    const b = await broker({ tls: { certFile: server.certFile, keyFile: server.keyFile } })
    expect(b.url).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/)
    expect(b.tls).toBe(true)
    expect(await attempt(b.url, caOnly())).toEqual({ online: true })
    // by name too: the certificate says localhost
    expect(await attempt(`mqtts://localhost:${b.listener.address.port}`, caOnly())).toEqual({ online: true })
    // credentials are still checked over TLS
    const wrong = await attempt(b.url, caOnly(), 'not-the-password')
    expect(wrong.online).toBe(false)
    expect(wrong.online ? null : wrong.error?.code).toBe('BAD_CREDENTIALS')
    expect(b.tlsListener?.handshakeFailures).toBe(0)
  })

  it('is refused by a client that trusts another CA, with an error that says so', async () => {
    const b = await broker({ tls: { certFile: server.certFile, keyFile: server.keyFile } })
    const r = await attempt(b.url, readTlsClientFiles({ ca: otherCa.certFile }))
    expect(r.online).toBe(false)
    const error = r.online ? null : r.error
    expect(error?.code).toBe('CONNECTION_LOST')
    expect(error?.message).toMatch(/^TLS: the broker's certificate was refused: .*check the CA/)
    // and without any CA, Node's root CAs do not know the test CA either
    const none = await attempt(b.url, {})
    expect(none.online ? null : none.error?.message).toMatch(/^TLS: the broker's certificate was refused/)
    await waitFor(() => (b.tlsListener?.handshakeFailures ?? 0) >= 2, 'the broker to count the failed handshakes')
  })

  it('refuses a certificate for another host name', async () => {
    const wrongName = await ca.issueServer('wrong-name', ['DNS:broker.example'])
    const b = await broker({ tls: { certFile: wrongName.certFile, keyFile: wrongName.keyFile } })
    const r = await attempt(b.url, caOnly())
    expect(r.online ? null : r.error?.message).toMatch(/^TLS: the broker's certificate was refused: .*ERR_TLS_CERT_ALTNAME_INVALID/)
  })

  it('does not talk plain MQTT on the TLS port', async () => {
    const b = await broker({ tls: { certFile: server.certFile, keyFile: server.keyFile } })
    const r = await attempt(`mqtt://127.0.0.1:${b.listener.address.port}`)
    expect(r.online).toBe(false)
    expect(r.online ? null : r.error?.message).toMatch(/closed the connection before answering CONNECT; if this port serves TLS, use an mqtts:\/\/ URL/)
    await waitFor(() => (b.tlsListener?.handshakeFailures ?? 0) >= 1, 'the broker to count the failed handshake')
    expect(b.broker.stats().connections).toBe(0)
  })

  it('with client authentication [CONN-TLS-2]: refuses a client without a certificate or with one from another CA, admits a good one', async () => {
    const b = await broker({ tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: ca.certFile, clientAuth: true } })
    const without = await attempt(b.url, caOnly())
    expect(without.online).toBe(false)
    expect(without.online ? null : without.error?.message).toMatch(/^TLS handshake failed: .*certificate/)
    const stranger = await attempt(b.url, readTlsClientFiles({ ca: ca.certFile, cert: strangerClient.certFile, key: strangerClient.keyFile }))
    expect(stranger.online).toBe(false)
    expect(stranger.online ? null : stranger.error?.message).toMatch(/closed the connection before answering CONNECT; if it requires a client certificate, give one signed by its CA/)
    await waitFor(() => (b.tlsListener?.handshakeFailures ?? 0) >= 2, 'the broker to count both refused handshakes')
    expect(await attempt(b.url, readTlsClientFiles({ ca: ca.certFile, cert: client.certFile, key: client.keyFile }))).toEqual({ online: true })
    // the certificate adds to the credentials, it does not replace them
    const wrong = await attempt(b.url, readTlsClientFiles({ ca: ca.certFile, cert: client.certFile, key: client.keyFile }), 'not-the-password')
    expect(wrong.online ? null : wrong.error?.code).toBe('BAD_CREDENTIALS')
  })

  it('reloads its certificate without a restart: new connections get the new one, a bad file keeps the old', async () => {
    const b = await broker({ tls: { certFile: join(dir.path, 'live.crt'), keyFile: join(dir.path, 'live.key') } }).catch((e: unknown) => e)
    expect(b).toBeInstanceOf(ConfigError)
    expect((b as Error).message).toMatch(/cannot read the certificate file .*live\.crt/)
    const { writeFile, copyFile } = await import('node:fs/promises')
    await copyFile(server.certFile, join(dir.path, 'live.crt'))
    await copyFile(server.keyFile, join(dir.path, 'live.key'))
    const live = await broker({ tls: { certFile: join(dir.path, 'live.crt'), keyFile: join(dir.path, 'live.key') } })
    const served = (): Promise<string> => new Promise((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: live.listener.address.port, ca: caOnlyPem }, () => {
        resolve(s.getPeerCertificate().fingerprint256)
        s.destroy()
      })
      s.once('error', reject)
    })
    const caOnlyPem = await readFile(ca.certFile)
    const first = await served()
    const renewed = await ca.issueServer('renewed')
    await copyFile(renewed.certFile, join(dir.path, 'live.crt'))
    await copyFile(renewed.keyFile, join(dir.path, 'live.key'))
    await live.reloadTls()
    const second = await served()
    expect(second).not.toBe(first)
    // a half-written renewal (a certificate whose key is another one) is refused and the old one stays
    await copyFile(server.keyFile, join(dir.path, 'live.key'))
    await expect(live.reloadTls()).rejects.toThrow(/TLS: the certificate, key or CA does not load/)
    await writeFile(join(dir.path, 'live.crt'), 'not a certificate')
    await expect(live.reloadTls()).rejects.toThrow(ConfigError)
    expect(await served()).toBe(second)
    expect(await attempt(live.url, caOnly())).toEqual({ online: true })
  })

  it('a reload ends the resumption of TLS sessions made with the old certificate [CONN-TLS-4]', async () => {
    const { copyFile } = await import('node:fs/promises')
    const [certFile, keyFile] = [join(dir.path, 'resumed.crt'), join(dir.path, 'resumed.key')]
    await copyFile(server.certFile, certFile)
    await copyFile(server.keyFile, keyFile)
    const b = await broker({ tls: { certFile, keyFile } })
    const caPem = await readFile(ca.certFile)
    /**
     * A TLS connection (resuming `session` if given): the certificate it saw, whether it resumed and,
     * with `keep`, the session the broker gave it (with TLS 1.3 it comes after the handshake).
     */
    const handshake = (session?: Buffer, keep = false): Promise<{ fingerprint: string, reused: boolean, session: Buffer | null }> => new Promise((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: b.listener.address.port, ca: caPem, ...(session !== undefined ? { session } : {}) })
      let secure = false
      let ticket: Buffer | null = null
      const done = (): void => {
        if (!secure || (keep && ticket === null)) return
        resolve({ fingerprint: s.getPeerCertificate().fingerprint256, reused: s.isSessionReused(), session: ticket })
        s.destroy()
      }
      s.once('error', reject)
      s.once('secureConnect', () => { secure = true; done() })
      s.once('session', (t: Buffer) => { ticket = t; done() })
    })
    const first = await handshake(undefined, true)
    const saved = first.session as Buffer
    // resumption works: a client that resumes skips the certificate
    expect((await handshake(saved)).reused).toBe(true)
    const renewed = await ca.issueServer('renewed-resumed')
    await copyFile(renewed.certFile, certFile)
    await copyFile(renewed.keyFile, keyFile)
    await b.reloadTls()
    // after the reload (a renewal after a compromise, say), an old session is not resumed: a full handshake, with the new certificate
    const after = await handshake(saved)
    expect(after.reused).toBe(false)
    expect(after.fingerprint).not.toBe(first.fingerprint)
  })
})

describe('TLS handshakes are bounded', () => {
  it('closes a peer that connects and never handshakes, and refuses connections over maxHandshakes', async () => {
    const b = await broker({ tls: { certFile: server.certFile, keyFile: server.keyFile, handshakeTimeoutMs: 500, maxHandshakes: 2 } })
    const port = b.listener.address.port
    const silent = (): Promise<{ socket: Socket, closed: Promise<void> }> => new Promise((resolve, reject) => {
      const socket = netConnect({ host: '127.0.0.1', port }, () => { resolve({ socket, closed: new Promise((r) => socket.once('close', () => { r() })) }) })
      socket.once('error', reject)
    })
    const [a, c] = [await silent(), await silent()]
    await waitFor(() => b.tlsListener?.handshaking === 2, 'two handshakes in progress')
    // a third peer is over the limit: closed at once, and counted
    const third = await silent()
    await third.closed
    await waitFor(() => b.tlsListener?.handshakeFailures === 1, 'the refused connection to be counted')
    expect(b.tlsListener?.handshaking).toBe(2)
    // the two silent ones are closed by the handshake timeout
    await Promise.all([a.closed, c.closed])
    await waitFor(() => b.tlsListener?.handshakeFailures === 3, 'the timed out handshakes to be counted')
    await waitFor(() => b.tlsListener?.handshaking === 0, 'no handshake in progress')
    expect(await attempt(b.url, caOnly())).toEqual({ online: true })
    expect(b.tlsListener?.handshaking).toBe(0)
  })
})

describe('plain listener on the network [CONN-TLS-3]', () => {
  it('refuses a non-loopback address without insecure, saying why, before touching the data directory', async () => {
    for (const host of ['0.0.0.0', '::', '10.1.2.3', 'broker.example']) {
      const data = join(dir.path, `refused-${host.replace(/\W/g, '_')}`)
      const err = await startBrokerServer({ site, dataDir: data, port: 0, host }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toMatch(new RegExp(`^refusing to listen on ${host.replace(/\./g, '\\.')} without TLS: .*in the clear.*--tls-cert.*--insecure`))
      expect(existsSync(data)).toBe(false)
    }
  })

  it('starts on a non-loopback address with insecure, and on loopback without it', async () => {
    const open = await broker({ host: '0.0.0.0', insecure: true })
    expect(open.url).toMatch(/^mqtt:\/\/0\.0\.0\.0:\d+$/)
    expect(await attempt(`mqtt://127.0.0.1:${open.listener.address.port}`)).toEqual({ online: true })
    const local = await broker({ host: '127.0.0.1' })
    expect(local.tls).toBe(false)
    await expect(local.reloadTls()).rejects.toThrow(/does not serve TLS/)
  })

  it('tells loopback addresses from others', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true)
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', '128.0.0.1', 'example.com', '']) expect(isLoopbackHost(h), h).toBe(false)
  })

  it('refuses TLS options that do not fit together, before touching the data directory', async () => {
    const data = join(dir.path, 'refused-tls')
    const cases: Array<[BrokerServerOptions['tls'], RegExp]> = [
      [{ certFile: server.certFile, keyFile: server.keyFile, clientAuth: true }, /needs the CA/],
      [{ certFile: server.certFile, keyFile: server.keyFile, caFile: ca.certFile }, /only used with client certificate authentication/],
      [{ certFile: server.certFile, keyFile: client.keyFile }, /does not load/],
      [{ certFile: server.certFile, keyFile: join(dir.path, 'missing.key') }, /cannot read the key file/],
      [{ certFile: server.certFile, keyFile: server.keyFile, caFile: server.keyFile, clientAuth: true }, /TLS: option "tls.ca" holds no PEM certificate/]
    ]
    for (const [tls, message] of cases) {
      await expect(startBrokerServer({ site, dataDir: data, port: 0, tls })).rejects.toThrow(message)
      expect(existsSync(data)).toBe(false)
    }
  })

  it('with the certificate and the key both missing, names the certificate file, every time', async () => {
    // both are read at once; the one reported must not depend on which read fails first
    const tls = { certFile: join(dir.path, 'missing.crt'), keyFile: join(dir.path, 'missing.key') }
    const messages = await Promise.all(Array.from({ length: 500 }, async () => {
      const err = await startBrokerServer({ site, dataDir: join(dir.path, 'refused-missing'), port: 0, tls }).catch((e: unknown) => e)
      return err instanceof ConfigError ? err.message.replace(/: ENOENT.*$/, '') : String(err)
    }))
    expect(new Set(messages)).toEqual(new Set([`TLS: cannot read the certificate file ${tls.certFile}`]))
  })
})

/**
 * TLS end to end ([CONN-TLS-1..3]): a real `herald broker` process serving mqtts:// with a CA and
 * certificates made by openssl in the test, real endpoints and `herald tail` connecting to it. Asserts
 * what a user sees: events delivered, refusals reported with a reason, exit codes and messages.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile } from 'node:fs/promises'
import { connect as tlsConnect } from 'node:tls'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ClientEndpoint } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { readTlsClientFiles, type TlsClientOptions } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { makeTestCa, tempDir, type CertFiles, type TestCa } from '@herald/node-runtime/testing'
import { parseGatewayConfig, startGateway } from '@herald/gateway'
import { collect } from './support/collect.js'
import { gatewayYaml } from './support/gateway-yaml.js'
import { Harness } from './support/harness.js'
import { Proc, writeTestSite } from './support/processes.js'
import { ScriptedDevice } from './support/scripted-device.js'
import { SECRETS } from './support/site.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

let pki: { path: string, remove: () => Promise<void> }
let ca: TestCa
let otherCa: TestCa
let server: CertFiles
let client: CertFiles
let gateway: CertFiles

beforeAll(async () => {
  pki = await tempDir('herald-pki-')
  ca = await makeTestCa(pki.path, 'ca')
  otherCa = await makeTestCa(pki.path, 'other-ca')
  server = await ca.issueServer('server')
  client = await ca.issueClient('client', 'alice')
  gateway = await ca.issueClient('gateway', 'svc-a')
})
afterAll(async () => { await pki.remove() })

const trustOf = (c: TestCa): TlsClientOptions => readTlsClientFiles({ ca: c.certFile })

describe('endpoint TLS options', () => {
  it('are checked when the endpoint is made: a tls option with a plain URL, a certificate without its key', () => {
    const makeService = (url: string, tls: TlsClientOptions): ServiceEndpoint => new ServiceEndpoint({ url, tls, serviceId: 'svc-a', secret: SECRETS['svc-a'], events: [{ name: 'readings', category: 'queueing' }] })
    const makeClient = (url: string, tls: TlsClientOptions): ClientEndpoint => new ClientEndpoint({ url, tls, clientName: 'c', user: 'alice', password: SECRETS.alice })
    expect(() => makeService('mqtt://127.0.0.1:1883', trustOf(ca))).toThrow(/^ServiceEndpoint: option "tls" is given but "url" is mqtt:\/\/, which does not use TLS; use mqtts:\/\//)
    expect(() => makeClient('mqtt://127.0.0.1:1883', trustOf(ca))).toThrow(/^ClientEndpoint: option "tls" is given but "url" is mqtt:\/\//)
    const { cert } = readTlsClientFiles({ cert: client.certFile })
    expect(() => makeService('mqtts://127.0.0.1:8883', { ...(cert !== undefined ? { cert } : {}) })).toThrow(/^ServiceEndpoint: options "tls.cert" and "tls.key" go together/)
    expect(() => makeClient('mqtts://127.0.0.1:8883', { servername: '' })).toThrow(/^ClientEndpoint: option "tls.servername"/)
  })
})

describe('TLS with a real herald broker', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  /** Runs `herald broker` with `args` (after --site/--data/--port 0) and waits until it listens. */
  async function broker (args: readonly string[], name = 'broker'): Promise<{ proc: Proc, url: string, port: number, data: string }> {
    const data = join(h.dir, name)
    const child = spawn(process.execPath, [CLI, 'broker', '--site', await writeTestSite(h.dir), '--data', data, '--port', '0', '--log-level', 'warn', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    const proc = new Proc(child, 'herald broker')
    h.onClose(() => proc.kill())
    const line = await proc.waitLine((l) => l.startsWith('herald broker listening on '))
    const url = line.slice('herald broker listening on '.length)
    return { proc, url, port: Number(new URL(url).port), data }
  }

  const tlsArgs = (): string[] => ['--tls-cert', server.certFile, '--tls-key', server.keyFile]
  const trust = (extra: { cert?: string, key?: string } = {}): TlsClientOptions => readTlsClientFiles({ ca: ca.certFile, ...extra })

  /** Waits until the client reports an error matching `pattern` for its connection, and checks it is not online. */
  async function refused (c: ClientEndpoint, pattern: RegExp): Promise<void> {
    await waitFor(() => c.status.lastError !== null, 'the client to report why it cannot connect')
    expect(c.status.state).not.toBe('online')
    expect(c.status.lastError?.message).toMatch(pattern)
  }

  it('serves mqtts://: a service raises and a client receives every event exactly once; a wrong CA and plain MQTT are refused with a reason', async () => {
    h = await Harness.create()
    const b = await broker(tlsArgs())
    expect(b.url).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/)
    const N = 500
    const svc = await h.service(b.url, 'svc-a', { tls: trust() })
    const got = await collect(h.client(`mqtts://localhost:${b.port}`, 'alice', 'tls-reader', { tls: trust() }), 'readings', { start: 'all' })
    for (let i = 0; i < N; i++) await svc.raise('readings', { i })
    await got.until(N)
    expect(got.payloads()).toEqual(Array.from({ length: N }, (_, i) => ({ i })))
    await waitFor(() => svc.status.backlog === 0, 'the broker to acknowledge every event')
    expect(svc.status.state).toBe('online')

    // a client that trusts another CA: refused, and it says why (not a silent retry)
    await refused(h.client(b.url, 'alice', 'wrong-ca', { tls: readTlsClientFiles({ ca: otherCa.certFile }) }), /^TLS: the broker's certificate was refused: .*check the CA/)
    // a client that speaks plain MQTT to the TLS port
    await refused(h.client(`mqtt://127.0.0.1:${b.port}`, 'alice', 'plain'), /closed the connection before answering CONNECT; if this port serves TLS, use an mqtts:\/\/ URL/)
    expect(got.events).toHaveLength(N)
  })

  it('herald tail reads over mqtts:// with --ca, and is refused without it', async () => {
    h = await Harness.create()
    const b = await broker(tlsArgs())
    const svc = await h.service(b.url, 'svc-a', { tls: trust() })
    for (let i = 0; i < 5; i++) await svc.raise('readings', { i })
    const tail = (args: readonly string[]): Proc => {
      const child = spawn(process.execPath, [CLI, 'tail', 'readings', '--user', 'alice', '--json', ...args], {
        stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', HERALD_LOG_LEVEL: 'warn', HERALD_PASSWORD: SECRETS.alice }
      })
      const p = new Proc(child, 'herald tail')
      h.onClose(() => p.kill())
      return p
    }
    const ok = tail(['--url', `mqtts://localhost:${b.port}`, '--ca', ca.certFile, '--count', '5', '--no-summary'])
    expect(await ok.exited).toBe(0)
    await ok.drained
    expect(ok.lines.map((l) => (JSON.parse(l) as { payload: { i: number } }).payload.i)).toEqual([0, 1, 2, 3, 4])

    // without --ca the system's root CAs do not know the test CA: tail keeps retrying and shows why
    const untrusting = tail(['--url', `mqtts://localhost:${b.port}`, '--count', '1', '--summary-every', '100ms'])
    await waitFor(() => /the broker's certificate was refused/.test(untrusting.stderr), 'tail to show the refused certificate', 60_000)
    expect(untrusting.lines).toEqual([])

    // TLS flags with a plain URL: a mistake, said at once
    const plain = tail(['--url', `mqtt://127.0.0.1:${b.port}`, '--ca', ca.certFile])
    expect(await plain.exited).toBe(2)
    expect(plain.stderr).toMatch(/--ca, --cert and --key are for TLS: use an mqtts:\/\/ URL/)
  })

  it('with --tls-client-auth: refuses a client without a certificate or with one from another CA, admits one with a good certificate and its password', async () => {
    h = await Harness.create()
    const b = await broker([...tlsArgs(), '--tls-ca', ca.certFile, '--tls-client-auth'])
    const svc = await h.service(b.url, 'svc-a', { tls: trust({ cert: gateway.certFile, key: gateway.keyFile }) })
    await svc.raise('readings', { n: 1 })
    await refused(h.client(b.url, 'alice', 'no-cert', { tls: trust() }), /TLS handshake failed: .*certificate|closed the connection before answering CONNECT; if it requires a client certificate/)
    const stranger = await otherCa.issueClient('stranger', 'alice')
    await refused(h.client(b.url, 'alice', 'stranger', { tls: trust({ cert: stranger.certFile, key: stranger.keyFile }) }), /client certificate/)
    // a good certificate does not replace the password
    await refused(h.client(b.url, 'alice', 'bad-password', { tls: trust({ cert: client.certFile, key: client.keyFile }), password: 'not-alice-password' }), /refused the credentials/)
    const got = await collect(h.client(b.url, 'alice', 'with-cert', { tls: trust({ cert: client.certFile, key: client.keyFile }) }), 'readings', { start: 'all' })
    await got.until(1)
    expect(got.payloads()).toEqual([{ n: 1 }])
  })

  it('a gateway configured with mqtts:// and TLS files raises device reports through a broker that requires client certificates', async () => {
    h = await Harness.create()
    const b = await broker([...tlsArgs(), '--tls-ca', ca.certFile, '--tls-client-auth'])
    const device = await ScriptedDevice.listen()
    h.onClose(() => device.close())
    const readings = await collect(h.client(b.url, 'alice', 'gw-reader', { tls: trust({ cert: client.certFile, key: client.keyFile }) }), 'readings', { start: 'all' })
    const brokerEntry = `\n  url: mqtts://localhost:${b.port}\n  ca: ${ca.certFile}\n  cert: ${gateway.certFile}\n  key: ${gateway.keyFile}`
    const config = await parseGatewayConfig(join(h.dir, 'gateway.yaml'), gatewayYaml(brokerEntry, join(h.dir, 'gw'), [device.url],
      '  - { name: readings, category: queueing, lifetime: 1d }',
      'mapping:\n  - on: STATE\n    raise: readings\n    payload: { seq: $seq }\n'))
    const g = await startGateway(config)
    h.onClose(() => g.close())
    await device.connected()
    await waitFor(() => device.syncs() >= 1, 'SYNC when the line opens')
    device.hello('TH-1', 1, { boot: 1, seq: 1 })
    for (let seq = 1; seq <= 3; seq++) device.send(device.state(1, seq, {}))
    await device.acked(1, 3)
    await readings.until(3)
    expect(readings.payloads()).toEqual([{ seq: 1 }, { seq: 2 }, { seq: 3 }])
    expect(g.endpoint.status.state).toBe('online')
  })

  it('refuses plain MQTT on 0.0.0.0 without --insecure, saying why, before creating the data directory; starts with --insecure', async () => {
    h = await Harness.create()
    const data = join(h.dir, 'refused')
    const child = spawn(process.execPath, [CLI, 'broker', '--site', await writeTestSite(h.dir), '--data', data, '--port', '0', '--host', '0.0.0.0'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const refusedProc = new Proc(child, 'herald broker --host 0.0.0.0')
    h.onClose(() => refusedProc.kill())
    expect(await refusedProc.exited).toBe(2)
    expect(refusedProc.stderr).toMatch(/^herald: refusing to listen on 0\.0\.0\.0 without TLS: service secrets and user passwords would cross the network in the clear.*--tls-cert.*--insecure.*\[CONFIG_INVALID\]/)
    expect(existsSync(data)).toBe(false)

    const open = await broker(['--host', '0.0.0.0', '--insecure'], 'insecure')
    expect(open.url).toMatch(/^mqtt:\/\/0\.0\.0\.0:\d+$/)
    const svc = await h.service(`mqtt://127.0.0.1:${open.port}`, 'svc-a')
    await svc.raise('readings', { n: 1 })
    const got = await collect(h.client(`mqtt://127.0.0.1:${open.port}`, 'alice', 'insecure-reader'), 'readings', { start: 'all' })
    await got.until(1)

    // and 0.0.0.0 with TLS needs no --insecure
    const secure = await broker(['--host', '0.0.0.0', ...tlsArgs()], 'secure')
    expect(secure.url).toMatch(/^mqtts:\/\/0\.0\.0\.0:\d+$/)
  })

  it('reloads its certificate on SIGHUP: new connections get the renewed one, open ones stay up', async () => {
    h = await Harness.create()
    const live = { certFile: join(h.dir, 'live.crt'), keyFile: join(h.dir, 'live.key') }
    await copyFile(server.certFile, live.certFile)
    await copyFile(server.keyFile, live.keyFile)
    const b = await broker(['--tls-cert', live.certFile, '--tls-key', live.keyFile])
    const fingerprint = (): Promise<string> => new Promise((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: b.port, ca: trust().ca as Buffer }, () => {
        resolve(s.getPeerCertificate().fingerprint256)
        s.destroy()
      })
      s.once('error', reject)
    })
    const svc = await h.service(b.url, 'svc-a', { tls: trust() })
    const got = await collect(h.client(b.url, 'alice', 'reload-reader', { tls: trust() }), 'readings', { start: 'all' })
    await svc.raise('readings', { n: 1 })
    await got.until(1)
    const before = await fingerprint()

    const renewed = await ca.issueServer('renewed')
    await copyFile(renewed.certFile, live.certFile)
    await copyFile(renewed.keyFile, live.keyFile)
    b.proc.child.kill('SIGHUP')
    await b.proc.waitLine((l) => l === 'herald broker reloaded its TLS certificate', 30_000)
    const after = await fingerprint()
    expect(after).not.toBe(before)
    // the open connections were not dropped
    await svc.raise('readings', { n: 2 })
    await got.until(2)
    expect(got.events.map((e) => e.redelivered)).toEqual([false, false])

    // a broken renewal is logged and the running certificate stays
    await copyFile(server.keyFile, live.keyFile)
    b.proc.child.kill('SIGHUP')
    await b.proc.waitLine((l) => l.includes('TLS certificate not reloaded; serving the previous one'), 30_000)
    expect(await fingerprint()).toBe(after)
    expect(b.proc.child.exitCode).toBeNull()
  })
})

import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError } from '@herald/protocol'
import { checkBrokerConnection, isSecureUrl, nodeTlsOptions, readTlsClientFiles, tlsConnectError } from './tls.js'
import { makeTestCa, tempDir, type CertFiles, type TestCa } from './testing/index.js'

let dir: { path: string, remove: () => Promise<void> }
let ca: TestCa
let client: CertFiles
let other: CertFiles

beforeAll(async () => {
  dir = await tempDir('herald-tls-options-')
  ca = await makeTestCa(dir.path, 'ca')
  client = await ca.issueClient('client', 'alice')
  other = await ca.issueClient('other', 'bob')
})
afterAll(async () => { await dir.remove() })

describe('checkBrokerConnection [CONN-TLS-1]', () => {
  it('takes mqtt:// without TLS options and mqtts:// with or without them', async () => {
    expect(() => { checkBrokerConnection('X', 'mqtt://127.0.0.1:1883', undefined) }).not.toThrow()
    expect(() => { checkBrokerConnection('X', 'mqtts://broker.example:8883', undefined) }).not.toThrow()
    const files = readTlsClientFiles({ ca: ca.certFile, cert: client.certFile, key: client.keyFile })
    expect(() => { checkBrokerConnection('X', 'mqtts://127.0.0.1:8883', { ...files, servername: 'localhost', rejectUnauthorized: true }) }).not.toThrow()
    const pem = await readFile(ca.certFile, 'utf8')
    expect(() => { checkBrokerConnection('X', 'mqtts://127.0.0.1:8883', { ca: [pem] }) }).not.toThrow()
  })

  it('refuses, naming the option: a URL that is not one, TLS options with a plain URL, unknown keys, wrong types, a certificate without its key or with another key', async () => {
    const cert = await readFile(client.certFile)
    const cases: Array<[unknown, unknown, RegExp]> = [
      [42, undefined, /X: option "url" must be a string/],
      ['127.0.0.1:1883', undefined, /X: option "url" "127\.0\.0\.1:1883" is not a URL like mqtt:\/\/host:1883/],
      ['http://127.0.0.1', undefined, /is not a broker URL \(mqtt:\/\/host:1883, or mqtts:\/\/host:8883 for TLS\)/],
      ['nonsense', undefined, /is not a URL/],
      ['mqtt://127.0.0.1:1883', {}, /X: option "tls" is given but "url" is mqtt:\/\/, which does not use TLS; use mqtts:\/\//],
      ['mqtts://h:1', 'ca.crt', /X: option "tls" must be an object/],
      ['mqtts://h:1', { ca: 'x', verify: false }, /X: unknown option "tls.verify"/],
      ['mqtts://h:1', { ca: 7 }, /option "tls.ca" must be PEM text or bytes/],
      ['mqtts://h:1', { ca: [] }, /option "tls.ca" must be PEM text or bytes \(with a -----BEGIN line\), or a non-empty list/],
      ['mqtts://h:1', { cert }, /"tls.cert" and "tls.key" go together/],
      ['mqtts://h:1', { cert, key: await readFile(other.keyFile) }, /X: option "tls": .*key the key of cert/],
      ['mqtts://h:1', { ca: 'not a certificate' }, /option "tls.ca" must be PEM text or bytes \(with a -----BEGIN line\)/],
      ['mqtts://h:1', { ca: Buffer.from('-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n') }, /X: option "tls.ca": certificate 1 does not parse/],
      ['mqtts://h:1', { ca: '-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n' }, /X: option "tls.ca" holds no PEM certificate/],
      ['mqtts://h:1', { key: Buffer.from('not a key'), cert }, /option "tls.key" must be PEM/],
      ['mqtts://h:1', { servername: '' }, /option "tls.servername" must be a non-empty string/],
      ['mqtts://h:1', { rejectUnauthorized: 'no' }, /option "tls.rejectUnauthorized" must be a boolean/]
    ]
    for (const [url, tls, message] of cases) {
      expect(() => { checkBrokerConnection('X', url, tls) }, String(message)).toThrow(message)
      expect(() => { checkBrokerConnection('X', url, tls) }).toThrow(ConfigError)
    }
  })

  it('names a TLS file that cannot be read', () => {
    expect(() => readTlsClientFiles({ ca: '/nonexistent/ca.crt' }, 'gateway')).toThrow(/^gateway: cannot read the CA certificate file \/nonexistent\/ca\.crt: /)
  })

  it('checks the broker certificate unless told not to', () => {
    expect(nodeTlsOptions(undefined).rejectUnauthorized).toBe(true)
    expect(nodeTlsOptions({}).rejectUnauthorized).toBe(true)
    expect(nodeTlsOptions({ rejectUnauthorized: false }).rejectUnauthorized).toBe(false)
    expect(isSecureUrl('mqtts://h:1')).toBe(true)
    expect(isSecureUrl('mqtt://h:1')).toBe(false)
  })

  it('says what to check when a handshake fails, and leaves other errors alone', () => {
    const verify = Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' })
    expect(tlsConnectError(verify)?.message).toBe('TLS: the broker\'s certificate was refused: self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN); check the CA (tls.ca, --ca) and the host name in the URL')
    const alert = Object.assign(new Error('8000:error:0A00045C:SSL routines:...'), { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', reason: 'tlsv13 alert certificate required' })
    expect(tlsConnectError(alert)?.message).toMatch(/^TLS handshake failed: tlsv13 alert certificate required \(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED\)/)
    expect(tlsConnectError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }))).toBeNull()
  })
})

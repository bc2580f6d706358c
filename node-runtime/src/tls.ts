/**
 * TLS on the endpoint side ([CONN-TLS-1] in docs/protocol.md): the options an endpoint passes for an
 * `mqtts://` broker URL, their validation, and a clear message for a handshake that failed.
 */
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { createSecureContext } from 'node:tls'
import { ConfigError, ErrorCode, HeraldError } from '@herald/protocol'

/** PEM text or its bytes. */
export type Pem = string | Uint8Array

/**
 * TLS options of an endpoint's connection to a `mqtts://` broker. Everything is optional: with none,
 * the broker's certificate is checked against Node's bundled root CAs and the URL's host name.
 */
export interface TlsClientOptions {
  /** CA certificate(s), PEM, that the broker's certificate must chain to. Default: Node's root CAs. */
  readonly ca?: Pem | readonly Pem[]
  /** This endpoint's client certificate (PEM, with any intermediates), for a broker that asks for one. Needs `key`. */
  readonly cert?: Pem
  /** The private key of `cert` (PEM, unencrypted). */
  readonly key?: Pem
  /** The name the broker's certificate must carry. Default: the URL's host (an IP address is checked against the certificate's IP entries). */
  readonly servername?: string
  /** Refuse a broker whose certificate does not verify. Default true; false only for tests. */
  readonly rejectUnauthorized?: boolean
}

const SCHEMES = ['mqtt:', 'tcp:', 'mqtts:', 'tls:', 'ws:', 'wss:'] as const
const SECURE = new Set<string>(['mqtts:', 'tls:', 'wss:'])
const TLS_KEYS = new Set(['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'])

const PEM_MARK = '-----BEGIN '

/** PEM text (or its bytes): it has a `-----BEGIN ` line. DER is not taken. */
function isPem (v: unknown): v is Pem {
  if (typeof v === 'string') return v.includes(PEM_MARK)
  return v instanceof Uint8Array && Buffer.from(v.buffer, v.byteOffset, v.byteLength).includes(PEM_MARK)
}

/** True for a URL whose scheme means TLS (`mqtts:`, `tls:`, `wss:`). */
export function isSecureUrl (url: string): boolean {
  try {
    return SECURE.has(new URL(url).protocol)
  } catch {
    return false
  }
}

/**
 * Checks an endpoint's `url` and `tls` options; throws a ConfigError naming the option. A `tls` object
 * with a plain `mqtt://` URL is refused (it would be ignored, and the connection would not be
 * encrypted); certificates and keys are parsed here, so a wrong file fails at construction.
 */
export function checkBrokerConnection (component: string, url: unknown, tls: unknown): void {
  if (typeof url !== 'string') throw new ConfigError(`${component}: option "url" must be a string like mqtt://host:1883 or mqtts://host:8883`)
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(`${component}: option "url" ${JSON.stringify(url)} is not a URL like mqtt://host:1883 or mqtts://host:8883`)
  }
  if (!(SCHEMES as readonly string[]).includes(parsed.protocol) || parsed.hostname === '') {
    throw new ConfigError(`${component}: option "url" ${JSON.stringify(url)} is not a broker URL (mqtt://host:1883, or mqtts://host:8883 for TLS)`)
  }
  if (tls === undefined) return
  if (tls === null || typeof tls !== 'object' || Array.isArray(tls)) throw new ConfigError(`${component}: option "tls" must be an object with ca, cert, key, servername, rejectUnauthorized`)
  if (!SECURE.has(parsed.protocol)) throw new ConfigError(`${component}: option "tls" is given but "url" is ${parsed.protocol}//, which does not use TLS; use ${parsed.protocol === 'ws:' ? 'wss://' : 'mqtts://'}`)
  const t = tls as Record<string, unknown>
  for (const k of Object.keys(t)) {
    if (!TLS_KEYS.has(k)) throw new ConfigError(`${component}: unknown option "tls.${k}" (expected ca, cert, key, servername, rejectUnauthorized)`)
  }
  const { ca, cert, key, servername, rejectUnauthorized } = t
  if (ca !== undefined) {
    const list = Array.isArray(ca) ? ca as unknown[] : [ca]
    if (list.length === 0 || !list.every(isPem)) throw new ConfigError(`${component}: option "tls.ca" must be PEM text or bytes (with a -----BEGIN line), or a non-empty list of them`)
  }
  if (cert !== undefined && !isPem(cert)) throw new ConfigError(`${component}: option "tls.cert" must be PEM text or bytes (with a -----BEGIN line)`)
  if (key !== undefined && !isPem(key)) throw new ConfigError(`${component}: option "tls.key" must be PEM text or bytes (with a -----BEGIN line)`)
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError(`${component}: options "tls.cert" and "tls.key" go together: a client certificate needs its key`)
  if (servername !== undefined && (typeof servername !== 'string' || servername === '')) throw new ConfigError(`${component}: option "tls.servername" must be a non-empty string`)
  if (rejectUnauthorized !== undefined && typeof rejectUnauthorized !== 'boolean') throw new ConfigError(`${component}: option "tls.rejectUnauthorized" must be a boolean`)
  if (ca !== undefined) checkCaCertificates(component, nodeTlsOptions({ ca: ca as Pem }).ca)
  try {
    createSecureContext(nodeTlsOptions(t))
  } catch (err) {
    throw new ConfigError(`${component}: option "tls": ${(err as Error).message} (is each of ca, cert and key a PEM file's content, and key the key of cert?)`, { cause: err })
  }
}

/**
 * Parses each certificate of a CA bundle (PEM), since node:tls skips one it cannot parse without a
 * word; throws a ConfigError naming `component`'s option "tls.ca".
 */
export function checkCaCertificates (component: string, ca: Buffer | Buffer[] | undefined): void {
  for (const bundle of Array.isArray(ca) ? ca : ca !== undefined ? [ca] : []) {
    const blocks = bundle.toString('latin1').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []
    if (blocks.length === 0) throw new ConfigError(`${component}: option "tls.ca" holds no PEM certificate (-----BEGIN CERTIFICATE-----)`)
    for (const [i, block] of blocks.entries()) {
      try {
        new X509Certificate(block)
      } catch (err) {
        throw new ConfigError(`${component}: option "tls.ca": certificate ${i + 1} does not parse: ${(err as Error).message}`, { cause: err })
      }
    }
  }
}

function toNode (p: Pem): Buffer {
  return typeof p === 'string' ? Buffer.from(p) : Buffer.from(p.buffer, p.byteOffset, p.byteLength)
}

/** TlsClientOptions as node:tls takes them (Buffers, rejectUnauthorized true unless false). */
export function nodeTlsOptions (tls: TlsClientOptions | undefined): {
  ca?: Buffer | Buffer[], cert?: Buffer, key?: Buffer, servername?: string, rejectUnauthorized: boolean
} {
  const ca = tls?.ca
  return {
    ...(ca !== undefined ? { ca: Array.isArray(ca) ? (ca as readonly Pem[]).map(toNode) : toNode(ca as Pem) } : {}),
    ...(tls?.cert !== undefined ? { cert: toNode(tls.cert) } : {}),
    ...(tls?.key !== undefined ? { key: toNode(tls.key) } : {}),
    ...(tls?.servername !== undefined ? { servername: tls.servername } : {}),
    rejectUnauthorized: tls?.rejectUnauthorized !== false
  }
}

/** Reads the files of a CA, a client certificate and its key into TlsClientOptions; a file that cannot be read is a ConfigError naming it. */
export function readTlsClientFiles (files: { readonly ca?: string | undefined, readonly cert?: string | undefined, readonly key?: string | undefined }, what = 'TLS'): TlsClientOptions {
  const read = (label: string, path: string): Buffer => {
    try {
      return readFileSync(path)
    } catch (err) {
      throw new ConfigError(`${what}: cannot read the ${label} file ${path}: ${(err as Error).message}`, { cause: err })
    }
  }
  return {
    ...(files.ca !== undefined ? { ca: read('CA certificate', files.ca) } : {}),
    ...(files.cert !== undefined ? { cert: read('client certificate', files.cert) } : {}),
    ...(files.key !== undefined ? { key: read('client key', files.key) } : {})
  }
}

/** OpenSSL/Node codes of a broker certificate that did not verify. */
const VERIFY_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'INVALID_CA'
])

/**
 * A TLS failure of a connection attempt as a HeraldError (`CONNECTION_LOST`) whose message says what
 * to check, or null if `err` is not a TLS failure. The endpoint keeps retrying (a broker's
 * certificate may be fixed), and reports this as its status' `lastError`.
 */
export function tlsConnectError (err: Error & { code?: unknown, reason?: unknown }): HeraldError | null {
  const code = typeof err.code === 'string' ? err.code : ''
  // OpenSSL's own message is a long line of library internals; its `reason` is the readable part
  const reason = typeof err.reason === 'string' ? err.reason : err.message
  if (VERIFY_CODES.has(code)) {
    return new HeraldError(ErrorCode.CONNECTION_LOST, `TLS: the broker's certificate was refused: ${err.message} (${code}); check the CA (tls.ca, --ca) and the host name in the URL`, { cause: err })
  }
  if (err.message === 'TLS not authorized') {
    return new HeraldError(ErrorCode.CONNECTION_LOST, 'TLS: the broker\'s certificate was refused (not authorized); check the CA (tls.ca, --ca)', { cause: err })
  }
  if (code.startsWith('ERR_SSL_') || /alert|handshake|wrong version number|certificate/i.test(err.message)) {
    return new HeraldError(ErrorCode.CONNECTION_LOST, `TLS handshake failed: ${reason}${code !== '' ? ` (${code})` : ''}; does the broker serve TLS on this port, and want a client certificate (tls.cert, --cert)?`, { cause: err })
  }
  return null
}

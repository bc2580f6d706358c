/**
 * Hashed credentials ([SITE-CRED-1]): `scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>`, made with node:crypto.
 * Plain secrets are hashed when the site is loaded and never kept.
 */
import { createHmac, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { ConfigError } from '@herald/protocol'

function scrypt (password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password, salt, keylen, opts, (err, key) => { if (err) reject(err); else resolve(key) })
  })
}

/** Memory scrypt needs for (N, r, p), as OpenSSL counts it (128·r·(N + p + 2) bytes), with headroom. */
function scryptMaxmem (N: number, r: number, p: number): number {
  return 128 * r * (N + p + 2) + 1024 * 1024
}

/** Default scrypt cost: N=2^14, r=8, p=1 (about 16 MiB and tens of milliseconds per check). */
export const SCRYPT_DEFAULTS = { N: 16384, r: 8, p: 1 } as const

/**
 * The weakest scrypt cost a stored hash may have ([SITE-CRED-2]): N ≥ 2^14 and r ≥ 8 (128·N·r =
 * 16 MiB of memory per check, the scrypt paper's parameters for interactive logins), p ≥ 1. A hash
 * below it is refused at load rather than silently accepted: with N=2 a stolen site file gives up
 * its secrets to a brute-force search at millions of guesses per second. `herald hash-secret` and
 * plain secrets in the site file use SCRYPT_DEFAULTS, which meet it.
 */
export const SCRYPT_MINIMUM = { N: 16384, r: 8, p: 1 } as const

/**
 * Key of the in-memory fingerprints of plain secrets: random per process, never stored, so a
 * fingerprint tells two loads of the same plain secret apart from a changed one ([SITE-RELOAD-3])
 * and nothing else.
 */
const FINGERPRINT_KEY = randomBytes(32)

/** A verified-at-load, opaque hashed credential. `toString()` and JSON never show the hash. */
export class HashedSecret {
  readonly #N: number
  readonly #r: number
  readonly #p: number
  readonly #salt: Buffer
  readonly #hash: Buffer
  /** For a secret hashed from plain text here: HMAC of the plain text under FINGERPRINT_KEY. */
  #fingerprint: string | null = null

  private constructor (N: number, r: number, p: number, salt: Buffer, hash: Buffer) {
    this.#N = N; this.#r = r; this.#p = p; this.#salt = salt; this.#hash = hash
  }

  /** Parses `scrypt$N$r$p$salt$hash`; throws a ConfigError naming `what`. */
  static parse (text: string, what: string): HashedSecret {
    const parts = text.split('$')
    const [alg, n, r, p, salt, hash] = parts
    const N = Number(n); const R = Number(r); const P = Number(p)
    if (parts.length !== 6 || alg !== 'scrypt' || salt === undefined || hash === undefined) {
      throw new ConfigError(`${what}: not a hash of the form scrypt$N$r$p$salt$hash (make one with "herald hash-secret")`)
    }
    // bounds within which node:crypto's scrypt accepts the parameters (see scryptMaxmem)
    if (!Number.isInteger(N) || N < 2 || N > 2 ** 20 || (N & (N - 1)) !== 0) throw new ConfigError(`${what}: scrypt N must be a power of two from 2 to 2^20, got ${n}`)
    if (!Number.isInteger(R) || R < 1 || R > 32) throw new ConfigError(`${what}: scrypt r must be from 1 to 32, got ${r}`)
    if (!Number.isInteger(P) || P < 1 || P > 16) throw new ConfigError(`${what}: scrypt p must be from 1 to 16, got ${p}`)
    if (R < 8 && N >= 2 ** (16 * R)) throw new ConfigError(`${what}: scrypt N must be below 2^(16·r) = ${2 ** (16 * R)}, got ${n}`)
    const h = Buffer.from(hash, 'base64')
    if (h.length < 16) throw new ConfigError(`${what}: hash is too short`)
    // [SITE-CRED-2] too cheap to protect the secret if the file leaks
    if (N < SCRYPT_MINIMUM.N || R < SCRYPT_MINIMUM.r) {
      throw new ConfigError(`${what}: scrypt cost N=${N}, r=${R} is below the minimum N=${SCRYPT_MINIMUM.N}, r=${SCRYPT_MINIMUM.r}: make a new hash with "herald hash-secret"`)
    }
    return new HashedSecret(N, R, P, Buffer.from(salt, 'base64'), h)
  }

  /** Hashes a plain secret with a fresh random salt. */
  static async hash (secret: string, cost: { N: number, r: number, p: number } = SCRYPT_DEFAULTS): Promise<HashedSecret> {
    const salt = randomBytes(16)
    const hash = await scrypt(secret, salt, 32, { N: cost.N, r: cost.r, p: cost.p, maxmem: scryptMaxmem(cost.N, cost.r, cost.p) })
    const h = new HashedSecret(cost.N, cost.r, cost.p, salt, hash)
    h.#fingerprint = createHmac('sha256', FINGERPRINT_KEY).update(secret).digest('base64')
    return h
  }

  /**
   * Whether `other` is the same secret ([SITE-RELOAD-3]): the same stored hash, or, for two hashed
   * from plain text in this process, the same plain text (each load salts it afresh). A plain
   * secret and a stored hash of it count as different.
   */
  same (other: { encode (): string }): boolean {
    if (!(other instanceof HashedSecret)) return false
    if (this.#fingerprint !== null || other.#fingerprint !== null) return this.#fingerprint === other.#fingerprint
    return this.encode() === other.encode()
  }

  /** True if `secret` matches; constant time in the comparison. */
  async verify (secret: string): Promise<boolean> {
    const key = await scrypt(secret, this.#salt, this.#hash.length, { N: this.#N, r: this.#r, p: this.#p, maxmem: scryptMaxmem(this.#N, this.#r, this.#p) })
    return timingSafeEqual(key, this.#hash)
  }

  /** The storable form `scrypt$N$r$p$salt$hash`. */
  encode (): string {
    return `scrypt$${this.#N}$${this.#r}$${this.#p}$${this.#salt.toString('base64')}$${this.#hash.toString('base64')}`
  }

  toString (): string { return '[HashedSecret]' }
  toJSON (): string { return '[HashedSecret]' }
  [Symbol.for('nodejs.util.inspect.custom')] (): string { return '[HashedSecret]' }
}

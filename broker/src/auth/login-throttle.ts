/**
 * Login throttling ([AUTH-THROTTLE-1] to [AUTH-THROTTLE-4] in docs/protocol.md). Every secret check
 * costs one scrypt (tens of milliseconds of a CPU core), so a guesser must not be able to buy as
 * many as it likes, nor fill the threads a real login needs:
 *
 * - a failure budget per source address and per claimed name, each failure forgiven after
 *   `failureDecayMs`; once a budget is spent the attempt is refused without any scrypt;
 * - a (name, address) pair that logged in successfully stays exempt from the name's budget for
 *   `trustMs`, and has a budget of its own instead of the address's, so guessers elsewhere, or a
 *   misconfigured neighbour behind the same address, cannot lock a known endpoint out;
 * - at most `maxConcurrentChecks` checks run at once, and one of them is kept for logins without
 *   recent failures; waiting checks are bounded and served cleanest first (fewest recent failures
 *   of their address and name; trusted pairs first), so a correct login does not queue behind
 *   guessers that already failed; each address has at most `maxChecksPerAddress` checks running or
 *   waiting;
 * - refusals are answered after a delay that grows with the address's failures (no CPU is spent
 *   meanwhile), which slows a guesser looping on one connection.
 *
 * Memory is bounded: at most `maxTrackedKeys` addresses, names and trusted pairs each, the least
 * recently seen dropped first.
 */
import { ConfigError, checkInt, type Clock, withDefaults } from '@herald/protocol'

/** Options of a LoginThrottle; defaults in LOGIN_THROTTLE_DEFAULTS. */
export interface LoginThrottleOptions {
  /** Failed checks a source address may have outstanding before its attempts are refused unchecked. Default 10. */
  readonly failuresPerAddress?: number
  /** Failed checks a name (user or service id, known or not) may have outstanding from untrusted addresses. Default 20. */
  readonly failuresPerName?: number
  /** One failure is forgiven after this many ms. Default 30,000. */
  readonly failureDecayMs?: number
  /** How long a (name, address) pair that logged in stays exempt from the name's budget, in ms. Default 7 days. */
  readonly trustMs?: number
  /** Most secret checks (scrypt) running at once. Default 2. */
  readonly maxConcurrentChecks?: number
  /** Most checks waiting for a slot; more are refused as busy. Default 64. */
  readonly maxQueuedChecks?: number
  /** Most checks running or waiting from one source address. Default 4. */
  readonly maxChecksPerAddress?: number
  /** Longest delay before a refusal is answered, in ms. Default 2,000. */
  readonly maxDelayMs?: number
  /** Most addresses, names, (name, address) pairs and trusted pairs tracked (each). Default 10,000. */
  readonly maxTrackedKeys?: number
}

export const LOGIN_THROTTLE_DEFAULTS = Object.freeze({
  failuresPerAddress: 10,
  failuresPerName: 20,
  failureDecayMs: 30_000,
  trustMs: 7 * 86_400_000,
  maxConcurrentChecks: 2,
  maxQueuedChecks: 64,
  maxChecksPerAddress: 4,
  maxDelayMs: 2000,
  maxTrackedKeys: 10_000
})

/** How an attempt ended: `ok` (secret right), `failed` (secret wrong), or refused unchecked. */
export type LoginVerdict = 'ok' | 'failed' | 'throttled' | 'busy'

/** Counters of a LoginThrottle. */
export interface LoginStats {
  /** Secret checks run (scrypt). */
  checks: number
  succeeded: number
  failed: number
  /** Refused unchecked: a failure budget was spent. */
  throttled: number
  /** Refused unchecked: too many checks waiting, or from one address. */
  busy: number
}

/** A decaying failure count. */
interface Score { value: number, at: number }

interface Waiter {
  readonly priority: number
  readonly dirty: boolean
  readonly seq: number
  readonly start: () => void
  readonly refuse: () => void
}

/** A bounded map in least-recently-used order (Map iteration order is insertion order). */
class Lru<V> {
  private readonly map = new Map<string, V>()
  constructor (private readonly cap: number) {}
  get (key: string): V | undefined {
    const v = this.map.get(key)
    if (v !== undefined) { this.map.delete(key); this.map.set(key, v) }
    return v
  }
  set (key: string, v: V): void {
    this.map.delete(key)
    this.map.set(key, v)
    if (this.map.size > this.cap) this.map.delete(this.map.keys().next().value as string)
  }
  delete (key: string): void { this.map.delete(key) }
  get size (): number { return this.map.size }
}

/**
 * The key of a source address: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64 prefix (one
 * host usually has a whole /64), and `unknown` for a stream without an address.
 */
export function addressKey (address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown'
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  if (!address.includes(':')) return address
  const [head = '', tail = ''] = address.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === '' ? [] : tail.split(':')
  const full = address.includes('::') ? [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t] : h
  return `${full.slice(0, 4).map((x) => x.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`
}

export class LoginThrottle {
  readonly stats: LoginStats = { checks: 0, succeeded: 0, failed: 0, throttled: 0, busy: 0 }
  private readonly o: Required<LoginThrottleOptions>
  private readonly addresses: Lru<Score>
  private readonly names: Lru<Score>
  private readonly trusted: Lru<number>
  private readonly pairs: Lru<Score>
  private readonly perAddress = new Map<string, number>()
  private readonly queue: Waiter[] = []
  private running = 0
  /** Running checks of logins with recent failures (of their address, pair or name). */
  private runningDirty = 0
  private seq = 0

  constructor (options: LoginThrottleOptions, private readonly clock: Clock) {
    const o = withDefaults('createBroker', LOGIN_THROTTLE_DEFAULTS, {
      failuresPerAddress: options.failuresPerAddress,
      failuresPerName: options.failuresPerName,
      failureDecayMs: options.failureDecayMs,
      trustMs: options.trustMs,
      maxConcurrentChecks: options.maxConcurrentChecks,
      maxQueuedChecks: options.maxQueuedChecks,
      maxChecksPerAddress: options.maxChecksPerAddress,
      maxDelayMs: options.maxDelayMs,
      maxTrackedKeys: options.maxTrackedKeys
    })
    checkInt('createBroker', 'loginFailuresPerAddress', o.failuresPerAddress, 1, 1_000_000)
    checkInt('createBroker', 'loginFailuresPerName', o.failuresPerName, 1, 1_000_000)
    checkInt('createBroker', 'loginFailureDecayMs', o.failureDecayMs, 1, 86_400_000)
    checkInt('createBroker', 'loginTrustMs', o.trustMs, 0, 365 * 86_400_000)
    checkInt('createBroker', 'maxConcurrentLoginChecks', o.maxConcurrentChecks, 1, 64)
    checkInt('createBroker', 'maxQueuedLoginChecks', o.maxQueuedChecks, 0, 100_000)
    checkInt('createBroker', 'maxLoginChecksPerAddress', o.maxChecksPerAddress, 1, 100_000)
    checkInt('createBroker', 'loginMaxDelayMs', o.maxDelayMs, 0, 60_000)
    checkInt('createBroker', 'loginMaxTrackedKeys', o.maxTrackedKeys, 16, 10_000_000)
    if (o.maxChecksPerAddress > o.maxConcurrentChecks + o.maxQueuedChecks) {
      throw new ConfigError(`createBroker: option "maxLoginChecksPerAddress" (${o.maxChecksPerAddress}) is more than maxConcurrentLoginChecks + maxQueuedLoginChecks (${o.maxConcurrentChecks + o.maxQueuedChecks})`)
    }
    this.o = o
    this.addresses = new Lru(o.maxTrackedKeys)
    this.names = new Lru(o.maxTrackedKeys)
    this.trusted = new Lru(o.maxTrackedKeys)
    this.pairs = new Lru(o.maxTrackedKeys)
  }

  /** Checks waiting for a slot. */
  get queued (): number { return this.queue.length }

  /** Keys held in memory: addresses, names and pairs with failures, trusted pairs. */
  get tracked (): { addresses: number, names: number, pairs: number, trusted: number } {
    return { addresses: this.addresses.size, names: this.names.size, pairs: this.pairs.size, trusted: this.trusted.size }
  }

  /**
   * Runs `check` (the scrypt comparison) for `name` (a claimed user name or `s/<serviceId>`) from
   * `address` (an addressKey()), unless a budget is spent or no slot can be had; records the
   * outcome. Never rejects: a `check` that throws counts as a failure.
   */
  async attempt (address: string, name: string, check: () => Promise<boolean>): Promise<LoginVerdict> {
    const now = this.clock.now()
    const trustKey = `${name}\u0000${address}`
    const until = this.trusted.get(trustKey)
    const isTrusted = until !== undefined && until > now
    if (until !== undefined && !isTrusted) this.trusted.delete(trustKey)
    // [AUTH-THROTTLE-2] a trusted pair skips the name's budget, and has its own instead of the address's
    const a = isTrusted ? this.score(this.pairs, trustKey, now) : this.score(this.addresses, address, now)
    const n = isTrusted ? 0 : this.score(this.names, name, now)
    // [AUTH-THROTTLE-1] a check that would make the count exceed the budget is not made
    if (a + 1 > this.o.failuresPerAddress || n + 1 > this.o.failuresPerName) {
      this.stats.throttled++
      return 'throttled'
    }
    // [AUTH-THROTTLE-3]
    const mine = this.perAddress.get(address) ?? 0
    if (mine >= this.o.maxChecksPerAddress) {
      this.stats.busy++
      return 'busy'
    }
    this.perAddress.set(address, mine + 1)
    try {
      // a trusted pair without failures of its own goes before every untrusted login
      const priority = isTrusted ? a - 1 : a + n
      const dirty = priority > 0
      if (!(await this.slot(priority, dirty))) {
        this.stats.busy++
        return 'busy'
      }
      let ok = false
      try {
        this.stats.checks++
        ok = await check()
      } catch {
        ok = false
      } finally {
        this.release(dirty)
      }
      const t = this.clock.now()
      if (ok) {
        this.stats.succeeded++
        if (this.o.trustMs > 0) this.trusted.set(trustKey, t + this.o.trustMs)
        return 'ok'
      }
      this.stats.failed++
      this.bump(this.addresses, address, t)
      this.bump(this.names, name, t)
      this.bump(this.pairs, trustKey, t)
      return 'failed'
    } finally {
      const left = (this.perAddress.get(address) ?? 1) - 1
      if (left === 0) this.perAddress.delete(address)
      else this.perAddress.set(address, left)
    }
  }

  /**
   * [AUTH-THROTTLE-4] How long to hold back a refusal to `address` (no CPU is spent meanwhile):
   * maxDelayMs once a budget is spent; else 100 ms doubling with each outstanding failure of the
   * address, up to maxDelayMs; for a busy refusal at least 100 ms.
   */
  refusalDelayMs (address: string, verdict: Exclude<LoginVerdict, 'ok'>): number {
    if (verdict === 'throttled') return this.o.maxDelayMs
    const a = this.score(this.addresses, address, this.clock.now())
    const grown = a < 1 ? 0 : 100 * 2 ** Math.min(20, Math.floor(a) - 1)
    return Math.min(this.o.maxDelayMs, verdict === 'busy' ? Math.max(100, grown) : grown)
  }

  /** The decayed failure count of `key`, dropping keys that have decayed to nothing. */
  private score (table: Lru<Score>, key: string, now: number): number {
    const s = table.get(key)
    if (s === undefined) return 0
    const v = s.value - Math.max(0, now - s.at) / this.o.failureDecayMs
    if (v <= 0) {
      table.delete(key)
      return 0
    }
    return v
  }

  private bump (table: Lru<Score>, key: string, now: number): void {
    table.set(key, { value: this.score(table, key, now) + 1, at: now })
  }

  /**
   * [AUTH-THROTTLE-3] Whether a check may start now: a slot is free, and for a login with recent
   * failures ("dirty") one slot stays reserved for logins without (when there are two or more).
   */
  private canRun (dirty: boolean): boolean {
    const max = this.o.maxConcurrentChecks
    return this.running < max && (!dirty || this.runningDirty < Math.max(1, max - 1))
  }

  private take (dirty: boolean): void {
    this.running++
    if (dirty) this.runningDirty++
  }

  /**
   * Waits for a check slot; false if the queue has no room (or this waiter was pushed out of it).
   * Every waiter is one that cannot run yet (pump() starts all that can), so one that can, runs.
   */
  private slot (priority: number, dirty: boolean): Promise<boolean> {
    if (this.canRun(dirty)) {
      this.take(dirty)
      return Promise.resolve(true)
    }
    return new Promise((resolve) => {
      const w: Waiter = { priority, dirty, seq: this.seq++, start: () => { resolve(true) }, refuse: () => { resolve(false) } }
      if (this.queue.length >= this.o.maxQueuedChecks) {
        // full: the worst waiter (most failures, then newest) loses its place, or this one gets none
        let worst = -1
        for (let i = 0; i < this.queue.length; i++) {
          if (worst < 0 || before(this.queue[worst]!, this.queue[i]!)) worst = i
        }
        if (worst < 0 || !before(w, this.queue[worst]!)) {
          w.refuse()
          return
        }
        this.queue.splice(worst, 1)[0]!.refuse()
      }
      this.queue.push(w)
    })
  }

  private release (dirty: boolean): void {
    this.running--
    if (dirty) this.runningDirty--
    // start the cleanest waiters (fewest failures, then oldest) that may run
    for (;;) {
      let best = -1
      for (let i = 0; i < this.queue.length; i++) {
        const w = this.queue[i]!
        if (this.canRun(w.dirty) && (best < 0 || before(w, this.queue[best]!))) best = i
      }
      if (best < 0) return
      const w = this.queue.splice(best, 1)[0]!
      this.take(w.dirty)
      w.start()
    }
  }
}

/** True if waiter `x` is served before `y`. */
function before (x: Waiter, y: Waiter): boolean {
  return x.priority < y.priority || (x.priority === y.priority && x.seq < y.seq)
}

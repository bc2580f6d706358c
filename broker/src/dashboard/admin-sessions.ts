/**
 * Dashboard login sessions ([OPS-DASH-3]): a random 256-bit token per login, kept in memory only
 * (a restart logs everyone out), at most `maxSessions` of them (the least recently used is dropped
 * for a new one), each ended after `idleMs` without a request, or by logout.
 */
import { randomBytes } from 'node:crypto'
import { checkInt, systemClock, withDefaults, type Clock } from '@herald/protocol'

export interface AdminSessionsOptions {
  /** Most sessions at once. Default 32. */
  readonly maxSessions?: number | undefined
  /** A session not used for this long ends, in ms. Default 30 min. */
  readonly idleMs?: number | undefined
}

export const ADMIN_SESSIONS_DEFAULTS = Object.freeze({ maxSessions: 32, idleMs: 30 * 60_000 })

export class AdminSessions {
  readonly maxSessions: number
  readonly idleMs: number
  /** token -> user and last use; a Map keeps insertion order, refreshed on use: oldest first. */
  private readonly sessions = new Map<string, { user: string, usedAt: number }>()

  constructor (options: AdminSessionsOptions = {}, private readonly clock: Clock = systemClock) {
    const o = withDefaults('dashboard', ADMIN_SESSIONS_DEFAULTS, { maxSessions: options.maxSessions, idleMs: options.idleMs })
    checkInt('dashboard', 'maxSessions', o.maxSessions, 1, 10_000)
    checkInt('dashboard', 'idleMs', o.idleMs, 1000, 7 * 86_400_000)
    this.maxSessions = o.maxSessions
    this.idleMs = o.idleMs
  }

  get size (): number {
    this.expire()
    return this.sessions.size
  }

  /** A new session for `user`: its token (43 characters, base64url). */
  create (user: string): string {
    this.expire()
    while (this.sessions.size >= this.maxSessions) this.sessions.delete(this.sessions.keys().next().value as string)
    const token = randomBytes(32).toString('base64url')
    this.sessions.set(token, { user, usedAt: this.clock.now() })
    return token
  }

  /** The user of a live session, its idle time restarted; null for an unknown or expired token. */
  use (token: string | undefined): string | null {
    if (token === undefined) return null
    const s = this.sessions.get(token)
    if (s === undefined) return null
    const now = this.clock.now()
    if (now - s.usedAt >= this.idleMs) {
      this.sessions.delete(token)
      return null
    }
    this.sessions.delete(token)
    s.usedAt = now
    this.sessions.set(token, s)
    return s.user
  }

  /** Ends a session (logout); true if there was one. */
  end (token: string | undefined): boolean {
    return token !== undefined && this.sessions.delete(token)
  }

  /** Ends every session of `user` (one no longer admin after a site reload, say). */
  endUser (user: string): void {
    for (const [t, s] of this.sessions) if (s.user === user) this.sessions.delete(t)
  }

  private expire (): void {
    const now = this.clock.now()
    // oldest use first: stop at the first one still live
    for (const [t, s] of this.sessions) {
      if (now - s.usedAt < this.idleMs) break
      this.sessions.delete(t)
    }
  }
}

/**
 * Connection counts ([CONN-LIMIT-1], [CONN-LIMIT-3], [CONN-LIMIT-4], [CONN-LIMIT-5] in
 * docs/protocol.md): in total, per source address and not yet logged in per source address when a
 * stream arrives, and per user, for guests in total and for guests per source address once the
 * principal is known.
 */
import type { Principal } from './principal.js'

/** The limits a ConnectionAdmission enforces. */
export interface AdmissionLimits {
  readonly maxConnections: number
  readonly maxConnectionsPerAddress: number
  readonly maxPendingConnectionsPerAddress: number
  readonly maxConnectionsPerUser: number
  readonly maxGuestConnections: number
  readonly maxGuestConnectionsPerAddress: number
}

/** Why a connection was refused by a count. */
export type AdmissionRefusal = 'maxConnections' | 'perAddress' | 'pendingPerAddress' | 'perUser' | 'guests' | 'guestsPerAddress'

/** One admitted stream; `release()` once when it closes. */
export interface Admitted {
  readonly address: string
  /** Counts the connection's principal; a refusal reason if a limit is reached. */
  admit (principal: Principal, takeover: boolean): AdmissionRefusal | null
  release (): void
}

function inc (m: Map<string, number>, k: string): void { m.set(k, (m.get(k) ?? 0) + 1) }
function dec (m: Map<string, number>, k: string): void {
  const n = (m.get(k) ?? 1) - 1
  if (n <= 0) m.delete(k)
  else m.set(k, n)
}

export class ConnectionAdmission {
  private total = 0
  private guests = 0
  private readonly byAddress = new Map<string, number>()
  /** Streams not yet admitted as a principal (no CONNECT yet, login in progress or refused). */
  private readonly pendingByAddress = new Map<string, number>()
  private readonly byUser = new Map<string, number>()
  private readonly guestsByAddress = new Map<string, number>()

  constructor (private readonly limits: AdmissionLimits) {}

  /** Open streams. */
  get connections (): number { return this.total }

  /** A new stream from `address` (an addressKey()): admitted, or the limit it would break. */
  open (address: string): Admitted | AdmissionRefusal {
    // [CONN-LIMIT-1] counted before the stream is served: the limit-th stream is the last one in
    if (this.total >= this.limits.maxConnections) return 'maxConnections'
    // [CONN-LIMIT-3]
    if (address !== 'unknown' && (this.byAddress.get(address) ?? 0) >= this.limits.maxConnectionsPerAddress) return 'perAddress'
    // [CONN-LIMIT-5]
    if (address !== 'unknown' && (this.pendingByAddress.get(address) ?? 0) >= this.limits.maxPendingConnectionsPerAddress) return 'pendingPerAddress'
    this.total++
    inc(this.byAddress, address)
    inc(this.pendingByAddress, address)
    let counted: { user: string | null } | null = null
    let pending = true
    let released = false
    const settle = (): void => {
      if (!pending) return
      pending = false
      dec(this.pendingByAddress, address)
    }
    return {
      address,
      admit: (principal, takeover) => {
        if (released || counted !== null) return null
        // a service endpoint is one connection per id already
        if (principal.kind === 'service') {
          settle()
          return null
        }
        // [CONN-LIMIT-4] a takeover replaces a connection of the same client id, so it adds none
        if (principal.user === null && (principal.kind === 'client' || principal.service === null)) {
          if (!takeover && this.guests >= this.limits.maxGuestConnections) return 'guests'
          if (!takeover && address !== 'unknown' && (this.guestsByAddress.get(address) ?? 0) >= this.limits.maxGuestConnectionsPerAddress) return 'guestsPerAddress'
          this.guests++
          inc(this.guestsByAddress, address)
          counted = { user: null }
          settle()
        } else {
          // plain connections with a service's secret (ingest) count like a user's, as `s/<id>`
          const user = principal.user !== null ? principal.user.name : `s/${(principal as { service: { id: string } }).service.id}`
          if (!takeover && (this.byUser.get(user) ?? 0) >= this.limits.maxConnectionsPerUser) return 'perUser'
          inc(this.byUser, user)
          counted = { user }
          settle()
        }
        return null
      },
      release: () => {
        if (released) return
        released = true
        this.total--
        dec(this.byAddress, address)
        settle()
        if (counted === null) return
        if (counted.user === null) {
          this.guests--
          dec(this.guestsByAddress, address)
        } else {
          dec(this.byUser, counted.user)
        }
      }
    }
  }
}

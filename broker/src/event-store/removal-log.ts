/**
 * What a store removed before delivery, so that a subscription can be told of the events it missed
 * ([CLI-GAP-1] .. [CLI-GAP-4] in docs/protocol.md). Shared by every backend; kept in memory, since
 * the store was opened.
 *
 * Per queue (service, event, recipient) a few runs of removed positions: a run is what one commit
 * (a flush's push-outs, a purge chunk) removed from the queue, with the store-wide removal epoch of
 * that commit. A queue keeps at most MAX_RUNS runs; beyond, its two oldest merge (their positions
 * and counts add up, their epochs span both), so the memory is bounded by the queues the store holds.
 * A run lists its positions while it has at most MAX_RUN_POSITIONS (at most 16 × 128 numbers per
 * queue), so that a subscription whose position lies inside it still gets an exact count.
 * Replaced instances ([STORE-REPLACE-1]) are not gaps: the newer instance says everything.
 */
import type { GapReport } from '@herald/protocol'

/** Why events were removed before delivery. */
export type RemovalReason = 'pushedOut' | 'expired'

/** Most runs kept per queue; older ones merge. */
export const MAX_RUNS = 16
/** Most positions a run lists one by one (so that a subscription inside it gets an exact count); beyond, only its bounds. */
export const MAX_RUN_POSITIONS = 128

interface Run {
  /** Epochs of the oldest and newest commit merged into the run. */
  epochFirst: number
  epochLast: number
  /** Lowest and highest position removed in the run. */
  first: number
  last: number
  pushedOut: number
  expired: number
  /** The positions removed, by reason, while the run has at most MAX_RUN_POSITIONS; else null. */
  pushedOutAt: number[] | null
  expiredAt: number[] | null
}

function mergeRuns (a: Run, b: Run): Run {
  const listed = a.pushedOutAt !== null && b.pushedOutAt !== null && a.pushedOut + a.expired + b.pushedOut + b.expired <= MAX_RUN_POSITIONS
  return {
    epochFirst: a.epochFirst,
    epochLast: b.epochLast,
    first: Math.min(a.first, b.first),
    last: Math.max(a.last, b.last),
    pushedOut: a.pushedOut + b.pushedOut,
    expired: a.expired + b.expired,
    pushedOutAt: listed ? [...(a.pushedOutAt as number[]), ...(b.pushedOutAt as number[])] : null,
    expiredAt: listed ? [...(a.expiredAt as number[]), ...(b.expiredAt as number[])] : null
  }
}

/** How many of `ps` are above `after`. */
function above (ps: readonly number[], after: number): number {
  let n = 0
  for (const p of ps) if (p > after) n++
  return n
}

interface QueueRuns {
  readonly serviceId: string
  readonly recipient: string | null
  readonly runs: Run[]
}

/** What a subscription missed ([CLI-GAP-2]). */
export type Gap = GapReport

/** Which subscription asks, and what it has seen. */
export interface GapQuery {
  readonly event: string
  /** The last position sent to (or held by) the subscription: removals at or below it are not gaps. */
  readonly after: number
  readonly services: ReadonlySet<string> | null
  /** For private events, the recipient; else null. */
  readonly recipient: string | null
  /** Removal epoch already accounted for (0: none). */
  readonly sinceEpoch: number
}

export class RemovalLog {
  #epoch = 0
  /** Per event name: its queues' runs, and the epoch of its last removal. */
  readonly #byEvent = new Map<string, { epoch: number, queues: Map<string, QueueRuns> }>()
  /** Run being filled in the current commit, per queue key. */
  #open = new Map<string, Run>()
  #inCommit = false

  /** Starts a commit: removals recorded until `end()` share one epoch (one run per queue). */
  begin (): void {
    this.#epoch++
    this.#inCommit = true
    this.#open.clear()
  }

  end (): void {
    this.#inCommit = false
    this.#open.clear()
  }

  /** Records one removed position (call between begin and end, after the commit succeeded). */
  record (serviceId: string, event: string, recipient: string | null, position: number, reason: RemovalReason): void {
    if (!this.#inCommit) throw new Error('RemovalLog.record outside begin/end')
    const key = `${serviceId}\u0000${event}\u0000${recipient ?? ''}`
    let run = this.#open.get(key)
    if (run === undefined) {
      let e = this.#byEvent.get(event)
      if (e === undefined) this.#byEvent.set(event, e = { epoch: 0, queues: new Map() })
      e.epoch = this.#epoch
      let q = e.queues.get(key)
      if (q === undefined) e.queues.set(key, q = { serviceId, recipient, runs: [] })
      run = { epochFirst: this.#epoch, epochLast: this.#epoch, first: position, last: position, pushedOut: 0, expired: 0, pushedOutAt: [], expiredAt: [] }
      q.runs.push(run)
      if (q.runs.length > MAX_RUNS) {
        const [a, b] = q.runs.splice(0, 2) as [Run, Run]
        q.runs.unshift(mergeRuns(a, b))
      }
      this.#open.set(key, run)
    }
    if (position < run.first) run.first = position
    if (position > run.last) run.last = position
    run[reason]++
    const listed = reason === 'pushedOut' ? run.pushedOutAt : run.expiredAt
    if (run.pushedOutAt !== null && run.pushedOut + run.expired > MAX_RUN_POSITIONS) {
      run.pushedOutAt = null
      run.expiredAt = null
    } else {
      listed?.push(position)
    }
  }

  /** The epoch of the last removal of `event`'s events, 0 if none: unchanged means no new gap. */
  epochOf (event: string): number {
    return this.#byEvent.get(event)?.epoch ?? 0
  }

  /**
   * What a subscription missed among the removals after `sinceEpoch` ([CLI-GAP-2]): a run wholly
   * newer than it and above `after` counts in full; a merged run that straddles either counts once
   * if its newest position is above `after` and it is wholly unseen, and makes the count a lower
   * bound (`exact: false`). Null when nothing was missed.
   */
  gap (q: GapQuery): Gap | null {
    const e = this.#byEvent.get(q.event)
    if (e === undefined || e.epoch <= q.sinceEpoch) return null
    let pushedOut = 0
    let expired = 0
    let exact = true
    let upTo = 0
    const services = new Set<string>()
    for (const queue of e.queues.values()) {
      if (q.services !== null && !q.services.has(queue.serviceId)) continue
      if (q.recipient !== null && queue.recipient !== q.recipient) continue
      for (const run of queue.runs) {
        if (run.epochLast <= q.sinceEpoch || run.last <= q.after) continue
        if (run.epochFirst > q.sinceEpoch && run.first > q.after) {
          pushedOut += run.pushedOut
          expired += run.expired
        } else if (run.epochFirst > q.sinceEpoch && run.pushedOutAt !== null && run.expiredAt !== null) {
          // the subscription's position lies inside the run: its positions are listed, count those above
          pushedOut += above(run.pushedOutAt, q.after)
          expired += above(run.expiredAt, q.after)
        } else {
          exact = false
          if (run.epochFirst > q.sinceEpoch) {
            if (run.pushedOut > 0) pushedOut++
            else expired++
          } else {
            continue
          }
        }
        services.add(queue.serviceId)
        if (run.last > upTo) upTo = run.last
      }
    }
    if (pushedOut + expired === 0) return null
    return { event: q.event, services: [...services].sort().slice(0, 100), missed: pushedOut + expired, exact, pushedOut, expired, upTo }
  }
}

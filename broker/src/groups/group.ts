/**
 * One consumer group at the broker ([GROUP-*] in docs/protocol.md): its segments, who claims each
 * under which epoch, the leases of members whose connection closed, and the moves that keep the
 * segments spread over the live members. No I/O: reads, frames and durable writes go through
 * GroupHooks, time through the Clock, so the rules are unit-tested with a ManualClock.
 */
import type { Clock, TimerHandle } from '@herald/protocol'
import type { SegmentRow } from './group-store.js'

/** A member: one group subscription of one client connection. */
export class GroupMember {
  /** Segments this member claims now. */
  readonly segments = new Set<number>()
  /** A store read is under way for it; `dirty`: events were stored meanwhile. */
  reading = false
  dirty = false
  closed = false
  constructor (
    /** The client key (`<user>/<clientName>`): a member that reconnects under it gets its leased segments back. */
    readonly key: string,
    /** The subscription id on its connection. */
    readonly sub: number,
    /** Most events in flight per segment it claims. */
    readonly perSegmentWindow: number
  ) {}
}

/** One segment's state. */
export class Segment {
  /** Position of the last event sent to the owner under the current claim. */
  cursor: number
  /** Positions sent under the current claim and not done yet, in order. */
  sent: number[] = []
  owner: GroupMember | null = null
  /** After its owner's connection closed: who may take it back until `leaseUntil`. */
  leasedTo: string | null = null
  leaseUntil = 0
  /** A move to another member under way: nothing more is sent to the owner meanwhile. */
  revokeTo: GroupMember | null = null
  revokeDeadline = 0
  /** The position to flag as redelivered when it is sent under this claim, or 0. */
  redeliver = 0
  constructor (readonly segment: number, public done: number, public started: number, public epoch: number) {
    this.cursor = done
  }

  /** How many more events may be sent to the owner now. */
  credit (): number {
    if (this.owner === null || this.revokeTo !== null) return 0
    return this.owner.perSegmentWindow - this.sent.length
  }
}

export interface GroupHooks {
  /** Tell `member` it claims these segments now ([GROUP-CTRL-2]). */
  assigned (member: GroupMember, claims: ReadonlyArray<{ segment: number, epoch: number }>): void
  /** Tell `member` these segments are no longer its ([GROUP-CTRL-3]). */
  revoked (member: GroupMember, segments: readonly number[]): void
  /** `member` may have events to be sent. */
  pump (member: GroupMember): void
  /** Writes rows durably, in the next group commit ([GROUP-STORE-1]). */
  persist (rows: readonly SegmentRow[]): Promise<void>
  /** The marks of an ack are durable: tell the member ([GROUP-CTRL-4]). */
  committed (member: GroupMember, row: SegmentRow): void
  /** No member and no lease left: the group may leave memory. */
  idle (): void
}

export interface GroupTimings {
  /** [GROUP-LEASE-1] How long a closed member's segments wait for it. */
  readonly leaseMs: number
  /** [GROUP-MOVE-1] Longest wait for a segment's owner to finish what it was sent before a move. */
  readonly revokeTimeoutMs: number
}

/** What an ack did ([GROUP-ACK-2]). */
export type AckOutcome = 'ok' | 'fenced' | 'beyond'

export class Group {
  readonly segs: Segment[]
  readonly members = new Map<string, GroupMember>()
  private leaseTimer: TimerHandle | null = null
  private leaseTimerAt = Infinity
  private readonly revokeTimers = new Map<number, TimerHandle>()
  /** Acks refused for an old epoch or not the owner ([GROUP-ACK-2]), for tests and metrics. */
  fenced = 0
  closed = false

  constructor (
    readonly segments: number,
    rows: ReadonlyArray<SegmentRow>,
    start: number,
    private readonly clock: Clock,
    private readonly timings: GroupTimings,
    private readonly hooks: GroupHooks
  ) {
    const byNumber = new Map(rows.map((r) => [r.segment, r]))
    this.segs = Array.from({ length: segments }, (_, i) => {
      const r = byNumber.get(i)
      return r === undefined ? new Segment(i, start, start, 0) : new Segment(i, r.done, Math.max(r.done, r.started), r.epoch)
    })
  }

  rowOf (s: Segment): SegmentRow {
    return { segment: s.segment, done: s.done, started: s.started, epoch: s.epoch }
  }

  /** Segments `m` claims, plus those moving to it. */
  private load (m: GroupMember): number {
    let n = 0
    for (const s of this.segs) if ((s.owner === m && s.revokeTo === null) || s.revokeTo === m) n++
    return n
  }

  /** [GROUP-JOIN-1] A member joins: its leased segments come back, free ones are spread, then a rebalance. */
  join (m: GroupMember): void {
    this.members.set(m.key, m)
    const now = this.clock.now()
    const back: Segment[] = []
    for (const s of this.segs) {
      // [GROUP-LEASE-1] a member that comes back within its lease gets its segments again
      if (s.owner === null && s.leasedTo === m.key && s.leaseUntil > now) back.push(s)
    }
    this.assignAll(back.map((s) => [s, m]))
    this.distribute()
    this.rebalance()
  }

  /**
   * A member leaves. `graceful` (unsubscribed, or its access withdrawn): its segments are free at
   * once. Else (its connection closed) they are leased to its key for `leaseMs` ([GROUP-LEASE-1]).
   */
  leave (m: GroupMember, graceful: boolean): void {
    if (this.members.get(m.key) !== m) return
    this.members.delete(m.key)
    m.closed = true
    const now = this.clock.now()
    for (const s of this.segs) {
      if (s.revokeTo === m) this.cancelRevoke(s)
      if (s.owner !== m) continue
      this.cancelRevoke(s)
      s.owner = null
      s.sent = []
      if (graceful) s.leasedTo = null
      else {
        s.leasedTo = m.key
        s.leaseUntil = now + this.timings.leaseMs
      }
    }
    m.segments.clear()
    if (!graceful) this.armLeaseTimer(now + this.timings.leaseMs)
    this.distribute()
    this.rebalance()
    this.checkIdle()
  }

  /** [GROUP-ACK-1] A member's marks for a segment; only the owner under the current epoch moves them ([GROUP-ACK-2]). */
  ack (m: GroupMember, segment: number, epoch: number, done: number, started: number): AckOutcome {
    const s = this.segs[segment]
    if (s === undefined || s.owner !== m || s.epoch !== epoch) {
      this.fenced++
      return 'fenced'
    }
    if (started > s.cursor) return 'beyond'
    if (done > s.done) s.done = done
    if (started > s.started) s.started = started
    if (s.done > s.started) s.started = s.done
    let i = 0
    while (i < s.sent.length && (s.sent[i] as number) <= s.done) i++
    if (i > 0) s.sent.splice(0, i)
    const row = this.rowOf(s)
    this.hooks.persist([row]).then(() => { if (!m.closed) this.hooks.committed(m, row) }, () => { /* the store logs it; the member waits and resubscribes */ })
    if (s.revokeTo !== null && s.sent.length === 0) this.finishRevoke(s)
    // refilled from half its window down, so that a read serves many acks, not one each
    else if (s.sent.length <= m.perSegmentWindow / 2) this.hooks.pump(m)
    return 'ok'
  }

  /** Gives `pairs` of (segment, member) new claims: epoch bumped, delivery from the done position. */
  private assignAll (pairs: ReadonlyArray<[Segment, GroupMember]>): void {
    if (pairs.length === 0) return
    const by = new Map<GroupMember, Array<{ segment: number, epoch: number }>>()
    const rows: SegmentRow[] = []
    for (const [s, m] of pairs) {
      s.epoch++
      s.owner = m
      s.leasedTo = null
      s.revokeTo = null
      s.cursor = s.done
      s.sent = []
      // [GROUP-REDELIVER-1] the handler of the event at `started` may have run: flagged when sent again
      s.redeliver = s.started > s.done ? s.started : 0
      m.segments.add(s.segment)
      let c = by.get(m)
      if (c === undefined) by.set(m, c = [])
      c.push({ segment: s.segment, epoch: s.epoch })
      rows.push(this.rowOf(s))
    }
    this.hooks.persist(rows).catch(() => { /* logged by the store */ })
    for (const [m, claims] of by) {
      this.hooks.assigned(m, claims)
      this.hooks.pump(m)
    }
  }

  /** [GROUP-ASSIGN-1] Free segments (no owner, no lease running) go to the least loaded live members, in turn. */
  private distribute (): void {
    if (this.members.size === 0) return
    const now = this.clock.now()
    const members = [...this.members.values()]
    const loads = new Map(members.map((m) => [m, this.load(m)]))
    const pairs: Array<[Segment, GroupMember]> = []
    for (const s of this.segs) {
      if (s.owner !== null || (s.leasedTo !== null && s.leaseUntil > now)) continue
      let best = members[0] as GroupMember
      for (const m of members) if ((loads.get(m) as number) < (loads.get(best) as number)) best = m
      loads.set(best, (loads.get(best) as number) + 1)
      pairs.push([s, best])
    }
    this.assignAll(pairs)
  }

  /**
   * [GROUP-MOVE-1] While the most loaded member has 2 or more segments more than the least loaded,
   * one of its segments moves: nothing more is sent to it, and once the owner has done what it was
   * sent (or after revokeTimeoutMs) the owner is told it is revoked and the other gets it.
   */
  private rebalance (): void {
    for (let i = 0; i < this.segments; i++) {
      let low: GroupMember | null = null
      let high: GroupMember | null = null
      for (const m of this.members.values()) {
        const l = this.load(m)
        if (low === null || l < this.load(low)) low = m
        if (high === null || l > this.load(high)) high = m
      }
      if (low === null || high === null || this.load(high) - this.load(low) < 2) return
      const s = this.segs.find((x) => x.owner === high && x.revokeTo === null)
      if (s === undefined) return
      s.revokeTo = low
      s.revokeDeadline = this.clock.now() + this.timings.revokeTimeoutMs
      if (s.sent.length === 0) this.finishRevoke(s)
      else this.revokeTimers.set(s.segment, this.clock.setTimer(() => { this.revokeTimers.delete(s.segment); if (s.revokeTo !== null) this.finishRevoke(s) }, this.timings.revokeTimeoutMs))
    }
  }

  private finishRevoke (s: Segment): void {
    const to = s.revokeTo
    const from = s.owner
    this.cancelRevoke(s)
    if (to === null || from === null || to.closed) return
    from.segments.delete(s.segment)
    this.hooks.revoked(from, [s.segment])
    this.assignAll([[s, to]])
    this.hooks.pump(from)
  }

  private cancelRevoke (s: Segment): void {
    s.revokeTo = null
    this.revokeTimers.get(s.segment)?.cancel()
    this.revokeTimers.delete(s.segment)
  }

  private armLeaseTimer (at: number): void {
    if (this.leaseTimer !== null && this.leaseTimerAt <= at) return
    this.leaseTimer?.cancel()
    this.leaseTimerAt = at
    this.leaseTimer = this.clock.setTimer(() => { this.leasesRanOut() }, Math.max(0, at - this.clock.now()))
  }

  /** [GROUP-LEASE-1] Leases that ran out free their segments for the live members. */
  private leasesRanOut (): void {
    this.leaseTimer = null
    this.leaseTimerAt = Infinity
    const now = this.clock.now()
    let next = Infinity
    for (const s of this.segs) {
      if (s.owner !== null || s.leasedTo === null) continue
      if (s.leaseUntil <= now) s.leasedTo = null
      else next = Math.min(next, s.leaseUntil)
    }
    if (next !== Infinity) this.armLeaseTimer(next)
    this.distribute()
    this.rebalance()
    this.checkIdle()
  }

  /** True while a member's lease runs. */
  get leased (): boolean {
    const now = this.clock.now()
    return this.segs.some((s) => s.owner === null && s.leasedTo !== null && s.leaseUntil > now)
  }

  private checkIdle (): void {
    if (this.members.size === 0 && !this.leased) this.hooks.idle()
  }

  /** Stops the timers (the group leaves memory). */
  close (): void {
    this.closed = true
    this.leaseTimer?.cancel()
    this.leaseTimer = null
    for (const t of this.revokeTimers.values()) t.cancel()
    this.revokeTimers.clear()
  }
}

/**
 * The broker's consumer groups ([GROUP-*] in docs/protocol.md): the registry of groups per user,
 * the gjoin / gack / unsub requests of members, the store reads that feed each member the events of
 * the segments it claims, and the GROUP_EVENTS frames. The claim rules are in group.ts.
 */
import { encodeControl, encodeGroupEvents, ErrorCode, frameChunks, isValidName, mayReceive, type Clock, type Control, type EventDefinition, type GroupAckRequest, type GroupJoinRequest, type Logger, type Site, type StoredEvent } from '@herald/protocol'
import type { EventStore } from '../event-store/event-store.js'
import type { ClientPrincipal } from '../auth/principal.js'
import { Group, GroupMember, type Segment } from './group.js'
import type { GroupStore, SegmentRow } from './group-store.js'
import { segmentOf } from './segment.js'

/** Limits and timings of consumer groups (BrokerOptions). */
export interface GroupLimits {
  /** [GROUP-LIMIT-1] Most groups one user has (in memory or stored). */
  readonly maxGroupsPerUser: number
  /** [GROUP-LIMIT-1] Most live members of one group. */
  readonly maxGroupMembers: number
  /** [GROUP-LEASE-1] How long a closed member's segments wait for it, ms. */
  readonly leaseMs: number
  /** [GROUP-MOVE-1] Longest wait for an owner to finish its sent events before a segment moves, ms. */
  readonly revokeTimeoutMs: number
  /** [GROUP-FORGET-1] A stored group with no member for this long is deleted when its user makes a new group, ms. */
  readonly groupIdleMs: number
}

export const GROUP_DEFAULTS = Object.freeze({
  maxGroupsPerUser: 100,
  maxGroupMembers: 64,
  leaseMs: 10_000,
  revokeTimeoutMs: 30_000,
  groupIdleMs: 7 * 24 * 3600_000
})

/** Where a member's frames go: its connection (a ClientSession). */
export interface MemberSession {
  readonly key: string
  readonly principal: ClientPrincipal
  readonly output: { write (frame: Uint8Array): void, readonly blocked: boolean }
  readonly closed: boolean
}

export interface GroupsContext {
  readonly store: EventStore
  readonly clock: Clock
  readonly logger: Logger
  readonly limits: GroupLimits
  readonly maxEventsPerFrame: number
  readonly maxFrameBytes: number
  /** Largest window a member may ask for. */
  readonly maxWindow: number
  /** Counts events sent to members (the broker's `delivered` and per-event figures). */
  readonly onDelivered?: (event: string, count: number) => void
}

/** A group in memory, with its identity. */
interface LiveGroup {
  readonly key: string
  readonly user: string
  readonly name: string
  def: EventDefinition
  readonly services: readonly string[] | null
  readonly serviceSet: ReadonlySet<string> | null
  readonly group: Group
  readonly sessions: Map<GroupMember, MemberSession>
}

function groupKey (user: string, name: string): string {
  return `${user}\u0000${name}`
}

function sameServices (a: readonly string[] | null, b: readonly string[] | null): boolean {
  if (a === null || b === null) return a === b
  return a.length === b.length && a.every((s, i) => s === b[i])
}

export class Groups {
  private readonly groups = new Map<string, LiveGroup>()
  /** Per session: its members by subscription id. */
  private readonly bySession = new Map<MemberSession, Map<number, { live: LiveGroup, member: GroupMember }>>()
  /** Events sent to group members, for stats. */
  delivered = 0

  constructor (private readonly ctx: GroupsContext) {}

  /** True if `sub` is a group subscription of `session`. */
  has (session: MemberSession, sub: number): boolean {
    return this.bySession.get(session)?.has(sub) ?? false
  }

  /** Group subscriptions of a session (they count towards its maxSubscriptions). */
  countOf (session: MemberSession): number {
    return this.bySession.get(session)?.size ?? 0
  }

  /** [GROUP-JOIN-1] A gjoin request, after Delivery checked the subscription id is free and within the connection's count. */
  join (session: MemberSession, req: GroupJoinRequest, site: Site): void {
    const fail = (code: ErrorCode, message: string): void => { this.control(session, { op: 'error', sub: req.sub, code, message }) }
    const user = session.principal.user
    if (user === null) return fail(ErrorCode.NOT_AUTHORIZED, 'consumer groups are for authenticated users; a guest cannot join one')
    const store = this.ctx.store.groups
    // [PG-GROUP-1] a store without groups (the PostgreSQL one): refused, typed, before anything is kept
    if (store === undefined) return fail(ErrorCode.INVALID_ARGUMENT, 'this broker\'s event store keeps no consumer groups (a broker on PostgreSQL has none, [PG-GROUP-1]): join through a broker on SQLite')
    if (!isValidName(req.group)) return fail(ErrorCode.INVALID_ARGUMENT, `group name ${JSON.stringify(req.group)} is not a valid name`)
    const def = site.events.get(req.event)
    if (def === undefined) return fail(ErrorCode.UNKNOWN_EVENT, `event "${req.event}" is not defined in the site`)
    if (!mayReceive(def, user)) return fail(ErrorCode.NOT_AUTHORIZED, `user "${user.name}" may not receive "${def.name}"`)
    if (def.category === 'private') return fail(ErrorCode.INVALID_ARGUMENT, `"${def.name}" is a private event: consumer groups are for queueing and replacing events`)
    const services = req.services === null ? null : [...new Set(req.services)].sort()
    if (services !== null) {
      const bad = services.find((s) => !isValidName(s))
      if (bad !== undefined) return fail(ErrorCode.INVALID_ARGUMENT, `service id ${JSON.stringify(bad)} is not a valid name`)
    }
    const key = groupKey(user.name, req.group)
    let live = this.groups.get(key)
    if (live === undefined) {
      let record
      try {
        record = store.loadGroup(user.name, req.group)
      } catch (err) {
        this.ctx.logger.error({ err, group: req.group }, 'consumer group load failed')
        return fail(ErrorCode.PERSISTENCE_FAILED, 'the broker could not read the group; join again later')
      }
      if (record === null) {
        const refusal = this.makeRoom(store, user.name)
        if (refusal !== null) return fail(ErrorCode.CAPACITY_EXCEEDED, refusal)
      } else if (record.event !== def.name || !sameServices(record.services, services) || record.segments !== req.segments) {
        return fail(ErrorCode.GROUP_MISMATCH, mismatch(req.group, record, def.name, services, req.segments))
      }
      const start = record === null && req.start === 'new' ? this.ctx.store.head() : 0
      live = this.open(store, user.name, req.group, def, services, req.segments, record?.rows ?? [], start, record === null)
    } else if (live.def.name !== def.name || !sameServices(live.services, services) || live.group.segments !== req.segments) {
      return fail(ErrorCode.GROUP_MISMATCH, mismatch(req.group, { event: live.def.name, services: live.services, segments: live.group.segments }, def.name, services, req.segments))
    }
    if (live.group.members.size >= this.ctx.limits.maxGroupMembers) return fail(ErrorCode.CAPACITY_EXCEEDED, `group "${req.group}" has ${this.ctx.limits.maxGroupMembers} members already, the most allowed`)
    if (live.group.members.has(session.key)) return fail(ErrorCode.INVALID_ARGUMENT, `client "${session.key}" is a member of group "${req.group}" already`)
    const window = Math.min(req.window, this.ctx.maxWindow)
    const member = new GroupMember(session.key, req.sub, Math.max(1, Math.floor(window / req.segments)))
    live.sessions.set(member, session)
    let mine = this.bySession.get(session)
    if (mine === undefined) this.bySession.set(session, mine = new Map<number, { live: LiveGroup, member: GroupMember }>())
    mine.set(req.sub, { live, member })
    this.control(session, { op: 'joined', sub: req.sub, category: def.category, segments: req.segments })
    live.group.join(member)
  }

  /** [GROUP-LIMIT-1] Null if the user may make one more group (after forgetting idle ones, [GROUP-FORGET-1]), else why not. */
  private makeRoom (store: GroupStore, user: string): string | null {
    const stored = store.listGroups(user)
    const cutoff = this.ctx.clock.now() - this.ctx.limits.groupIdleMs
    let n = 0
    for (const g of stored) {
      if (!this.groups.has(groupKey(user, g.group)) && g.lastUsed < cutoff) {
        store.deleteGroup(user, g.group).catch(() => { /* logged by the store */ })
        continue
      }
      n++
    }
    if (n >= this.ctx.limits.maxGroupsPerUser) return `user "${user}" has ${n} consumer groups, the most allowed (${this.ctx.limits.maxGroupsPerUser}); a group unused for ${this.ctx.limits.groupIdleMs} ms is forgotten`
    return null
  }

  private open (store: GroupStore, user: string, name: string, def: EventDefinition, services: readonly string[] | null, segments: number, rows: readonly SegmentRow[], start: number, fresh: boolean): LiveGroup {
    const key = groupKey(user, name)
    const write = (r: readonly SegmentRow[]): Promise<void> => store.writeGroup({ user, group: name, event: def.name, services, segments, lastUsed: this.ctx.clock.now(), rows: r })
    const sessions = new Map<GroupMember, MemberSession>()
    // eslint-disable-next-line prefer-const
    let live: LiveGroup
    const group = new Group(segments, rows, start, this.ctx.clock, { leaseMs: this.ctx.limits.leaseMs, revokeTimeoutMs: this.ctx.limits.revokeTimeoutMs }, {
      assigned: (m, claims) => { const s = sessions.get(m); if (s !== undefined) this.control(s, { op: 'assigned', sub: m.sub, claims }) },
      revoked: (m, segs) => { const s = sessions.get(m); if (s !== undefined) this.control(s, { op: 'revoked', sub: m.sub, segments: segs }) },
      pump: (m) => { this.pump(live, m) },
      persist: async (r) => {
        try {
          await write(r)
        } catch (err) {
          this.ctx.logger.error({ err, group: name }, 'consumer group write failed')
          // a member waiting for a `committed` that will not come: its members join again later
          for (const [m, session] of [...sessions]) {
            if (session.closed) continue
            this.control(session, { op: 'error', sub: m.sub, code: ErrorCode.PERSISTENCE_FAILED, message: 'the broker could not write the group\'s marks; join again later' })
            this.leave(session, m.sub)
          }
          throw err
        }
      },
      committed: (m, row) => { const s = sessions.get(m); if (s !== undefined && !s.closed) this.control(s, { op: 'committed', sub: m.sub, segment: row.segment, epoch: row.epoch, done: row.done, started: row.started }) },
      idle: () => {
        // [GROUP-FORGET-1] out of memory once its writes are durable (they are committed in order),
        // so that a member joining later loads its latest marks; its rows stay stored (lastUsed now)
        const drop = (): void => {
          if (group.members.size > 0 || group.leased || this.groups.get(key) !== live) return
          group.close()
          this.groups.delete(key)
        }
        write([]).then(drop, drop)
      }
    })
    live = { key, user, name, def, services, serviceSet: services === null ? null : new Set(services), group, sessions }
    this.groups.set(key, live)
    if (fresh) write(group.segs.map((s) => group.rowOf(s))).catch(() => { /* logged */ })
    return live
  }

  /** [GROUP-ACK-1] A gack request. */
  ack (session: MemberSession, req: GroupAckRequest): void {
    const m = this.bySession.get(session)?.get(req.sub)
    if (m === undefined) return // may cross a leave
    const outcome = m.live.group.ack(m.member, req.segment, req.epoch, req.done, req.started)
    if (outcome === 'beyond') this.control(session, { op: 'error', sub: null, code: ErrorCode.INVALID_ARGUMENT, message: `gack for segment ${req.segment} names position ${req.started}, beyond what was sent` })
  }

  /** [GROUP-LEAVE-1] An unsub of a group subscription: its segments are free at once. Returns false if `sub` is no group's. */
  leave (session: MemberSession, sub: number): boolean {
    const mine = this.bySession.get(session)
    const m = mine?.get(sub)
    if (mine === undefined || m === undefined) return false
    mine.delete(sub)
    m.live.sessions.delete(m.member)
    m.live.group.leave(m.member, true)
    return true
  }

  /** [GROUP-LEASE-1] A member's connection closed: its segments are leased to its client key. */
  sessionClosed (session: MemberSession): void {
    const mine = this.bySession.get(session)
    if (mine === undefined) return
    this.bySession.delete(session)
    for (const { live, member } of mine.values()) {
      live.sessions.delete(member)
      live.group.leave(member, false)
    }
  }

  /** A blocked connection drained: its members read again. */
  drained (session: MemberSession): void {
    for (const { live, member } of this.bySession.get(session)?.values() ?? []) this.pump(live, member)
  }

  /**
   * [GROUP-ACCESS-1] A site reload: a member whose user may no longer receive the group's event (or
   * whose event was removed) leaves, as by unsub, with a CONTROL error naming it.
   */
  recheck (site: Site, session: MemberSession): boolean {
    const mine = this.bySession.get(session)
    if (mine === undefined) return false
    const user = session.principal.user
    let ended = false
    for (const [sub, { live }] of [...mine]) {
      const def = site.events.get(live.def.name)
      let refusal: [ErrorCode, string] | null = null
      if (def === undefined) refusal = [ErrorCode.UNKNOWN_EVENT, `event "${live.def.name}" was removed from the site`]
      else if (user === null || !mayReceive(def, user)) refusal = [ErrorCode.NOT_AUTHORIZED, `user "${user?.name ?? '?'}" may no longer receive "${live.def.name}" (the site changed)`]
      if (refusal === null) {
        live.def = def as EventDefinition
        continue
      }
      this.leave(session, sub)
      ended = true
      this.control(session, { op: 'error', sub, code: refusal[0], message: refusal[1] })
    }
    return ended
  }

  /** Newly committed events: members of groups on their names read. */
  onStored (events: readonly StoredEvent[]): void {
    if (this.groups.size === 0) return
    for (const live of this.groups.values()) {
      // only the members claiming a segment of the new events read
      let segs: Set<number> | null = null
      for (const e of events) {
        if (e.name !== live.def.name || (live.serviceSet !== null && !live.serviceSet.has(e.serviceId))) continue
        segs ??= new Set<number>()
        segs.add(segmentOf(e.serviceId, live.group.segments))
      }
      if (segs === null) continue
      for (const m of live.group.members.values()) {
        for (const n of m.segments) {
          if (segs.has(n)) {
            this.pump(live, m)
            break
          }
        }
      }
    }
  }

  /**
   * Reads, for one member, the events after the lowest cursor among its segments with credit, and
   * sends each to its segment's frame while the segment has credit ([GROUP-FRAME-1]). A segment left
   * with credit saw all its events up to the last one read, so its cursor moves there.
   */
  private pump (live: LiveGroup, m: GroupMember): void {
    if (m.closed) return
    if (m.reading) {
      m.dirty = true
      return
    }
    const session = live.sessions.get(m)
    if (session === undefined || session.closed || session.output.blocked) return
    let after = Infinity
    /** The segments this read is for, with their epoch when it started: only they are sent to and moved. */
    const considered = new Map<number, number>()
    for (const n of m.segments) {
      const s = live.group.segs[n] as Segment
      if (s.credit() <= 0) continue
      considered.set(n, s.epoch)
      if (s.cursor < after) after = s.cursor
    }
    if (after === Infinity) return
    const head = this.ctx.store.head()
    if (after >= head) return
    m.reading = true
    m.dirty = false
    const limit = this.ctx.maxEventsPerFrame
    this.ctx.store.read({ event: live.def.name, after, services: live.serviceSet, recipient: null, now: this.ctx.clock.now(), limit, maxBytes: this.ctx.maxFrameBytes }).then((events) => {
      m.reading = false
      if (m.closed || session.closed) return
      const segs = live.group.segs
      const batches = new Map<number, StoredEvent[]>()
      let bytes = 0
      // a segment claimed again meanwhile starts from its done position: not this read's
      const mine = (n: number, s: Segment): boolean => s.owner === m && considered.get(n) === s.epoch
      for (const e of events) {
        bytes += e.payload.byteLength
        const n = segmentOf(e.serviceId, live.group.segments)
        const s = segs[n] as Segment
        if (!mine(n, s) || e.position <= s.cursor || s.credit() <= 0) continue
        s.cursor = e.position
        s.sent.push(e.position)
        let b = batches.get(n)
        if (b === undefined) batches.set(n, b = [])
        b.push(e)
      }
      const full = events.length >= limit || bytes >= this.ctx.maxFrameBytes
      // events up to `head` were committed before the read began: a short read saw all of them
      const upTo = full ? (events.length > 0 ? (events[events.length - 1] as StoredEvent).position : after) : head
      for (const n of considered.keys()) {
        const s = segs[n] as Segment
        if (mine(n, s) && s.credit() > 0 && s.cursor < upTo) s.cursor = upTo
      }
      const now = this.ctx.clock.now()
      for (const [n, batch] of batches) {
        const s = segs[n] as Segment
        for (const chunk of frameChunks(batch, this.ctx.maxEventsPerFrame, this.ctx.maxFrameBytes)) {
          const flagged = s.redeliver !== 0 && chunk.some((e) => e.position === s.redeliver) ? s.redeliver : 0
          if (flagged !== 0 || (s.redeliver !== 0 && (chunk[chunk.length - 1] as StoredEvent).position > s.redeliver)) s.redeliver = 0
          session.output.write(encodeGroupEvents(m.sub, n, s.epoch, flagged, now, chunk))
        }
        this.delivered += batch.length
        this.ctx.onDelivered?.(live.def.name, batch.length)
      }
      if (full || m.dirty || batches.size > 0) this.pump(live, m)
    }, (err: unknown) => {
      m.reading = false
      this.ctx.logger.error({ err, event: live.def.name }, 'event store read for a consumer group failed')
      if (!session.closed) this.control(session, { op: 'error', sub: m.sub, code: ErrorCode.PERSISTENCE_FAILED, message: 'the broker could not read stored events; join again later' })
      this.leave(session, m.sub)
    })
  }

  private control (session: MemberSession, c: Control): void {
    session.output.write(encodeControl(c))
  }
}

function mismatch (name: string, had: { event: string, services: readonly string[] | null, segments: number }, event: string, services: readonly string[] | null, segments: number): string {
  const show = (s: readonly string[] | null): string => s === null ? 'all services' : `services ${s.join(',')}`
  return `group "${name}" is on event "${had.event}" (${show(had.services)}, ${had.segments} segments); this member asked for "${event}" (${show(services)}, ${segments} segments)`
}

/**
 * The broker's side of subscriptions ([CLI-*] in docs/protocol.md): answers REQUEST frames, reads
 * stored events for subscriptions that are behind, pushes newly stored events straight from memory
 * to subscriptions that are caught up, and keeps each subscription within its in-flight window.
 *
 * Back-pressure ([CLI-BACKPRESSURE-1]): a connection has a byte budget for events in flight across
 * all its subscriptions, and its output says when its socket holds too much unsent. A subscription
 * stopped by either waits in its connection's `waiting` list, reading nothing, until the connection
 * drains or an ack frees budget; events stored meanwhile stay in the store, not in memory. Reads
 * are bounded too: at most `maxConcurrentReads` at once, each of at most one frame's bytes.
 */
import { decodeRequest, encodeControl, encodeEvents, ErrorCode, frameChunks, isValidName, keyProblem, mayReceive, type Clock, type Control, type EventDefinition, type Logger, type Request, type Site, type StoredEvent } from '@herald/protocol'
import type { ClientPrincipal } from '../auth/principal.js'
import { isPromise, type EventStore, type ExpiredUnpurged } from '../event-store/event-store.js'
import type { Gap } from '../event-store/removal-log.js'
import { Subscription } from './subscription.js'
import { Groups, GROUP_DEFAULTS, type GroupLimits } from '../groups/groups.js'

/** Limits of the delivery side. */
export interface DeliveryLimits {
  /** Largest in-flight window a client may ask for. */
  readonly maxWindow: number
  /** Most events in one EVENTS frame. */
  readonly maxEventsPerFrame: number
  /** Target size of one EVENTS frame in bytes (a larger single event goes alone). */
  readonly maxFrameBytes: number
  /** Most subscriptions on one connection. */
  readonly maxSubscriptions: number
  /** Most payload bytes in flight per subscription. */
  readonly maxInflightBytes: number
  /** Most payload bytes in flight per connection, across its subscriptions. */
  readonly maxConnectionInflightBytes: number
  /** Most subscriptions on one guest connection. */
  readonly guestMaxSubscriptions: number
  /** Largest in-flight window a guest subscription may ask for. */
  readonly guestMaxWindow: number
  /** Most payload bytes in flight per guest connection, across its subscriptions. */
  readonly guestMaxConnectionInflightBytes: number
  /** Most store reads for delivery under way at once (each holds at most about one frame). */
  readonly maxConcurrentReads: number
}

/** Where a session's frames go: its connection. */
export interface SessionOutput {
  write (frame: Uint8Array): void
  /** True while the connection holds more unsent bytes than its bound: no EVENTS frames until `drained()`. */
  readonly blocked: boolean
}

/** The limits that apply to one connection: a user's or a guest's ([CLI-GUEST-1]). */
interface SessionLimits {
  readonly maxSubscriptions: number
  readonly maxWindow: number
  readonly maxInflightBytes: number
}

export interface DeliveryContext {
  readonly site: Site
  readonly store: EventStore
  readonly clock: Clock
  readonly logger: Logger
  readonly limits: DeliveryLimits
  /** [GROUP-*] consumer groups' limits and timings. Default GROUP_DEFAULTS. */
  readonly groups?: GroupLimits
}

/** A connected client endpoint and its subscriptions. */
export class ClientSession {
  readonly subs = new Map<number, Subscription>()
  /** Subscriptions with events to send that the connection's limits stopped, oldest first. */
  readonly waiting = new Set<Subscription>()
  /** Payload bytes sent and not acknowledged, across the subscriptions. */
  inflightBytes = 0
  /** Payload bytes that reads under way may send. */
  reservedBytes = 0
  closed = false
  /** Replaced by a site reload with the user's new definition ([SITE-RELOAD-5]). */
  principal: ClientPrincipal
  constructor (principal: ClientPrincipal, readonly output: SessionOutput, readonly limits: SessionLimits) {
    this.principal = principal
  }
  get key (): string { return this.principal.key }
  /** Payload bytes the connection may still have in flight. */
  get bytesLeft (): number { return this.limits.maxInflightBytes - this.inflightBytes - this.reservedBytes }
}

/** How many of `events` fit `credit` events and `budget` bytes (the event reaching the budget included). */
function fitting (events: readonly StoredEvent[], credit: number, budget: number): number {
  if (budget <= 0) return 0
  const max = Math.min(credit, events.length)
  let bytes = 0
  let n = 0
  while (n < max && bytes < budget) bytes += (events[n++] as StoredEvent).payload.byteLength
  return n
}

/** One client session as the dashboard lists it (Delivery.summaries). */
export interface SessionSummary {
  /** `<user>/<clientName>`, `~guest/<clientName>` for a guest. */
  readonly key: string
  readonly guest: boolean
  /** Its subscriptions (the first 50): event name and lag in positions (0 when caught up). */
  readonly subscriptions: ReadonlyArray<{ readonly event: string, readonly lag: number }>
  /** Subscriptions beyond those listed. */
  readonly subscriptionsLeftOut: number
}

/** The lag of one event name's subscriptions (Delivery.lag). */
export interface SubscriptionLag { subscriptions: number, max: number, total: number }

export class Delivery {
  private readonly sessions = new Map<string, ClientSession>()
  private readonly byEvent = new Map<string, Set<Subscription>>()
  private readonly owner = new WeakMap<Subscription, ClientSession>()
  /** Subscriptions waiting for a read slot, oldest first. */
  private readonly readQueue = new Set<Subscription>()
  private reads = 0
  /** Events sent to clients, for status and tests. */
  delivered = 0
  /** Events sent to clients per event name (for metrics). */
  readonly deliveredByEvent = new Map<string, number>()
  /** [CLI-GAP-4] Per event name: gaps found (subscriptions that missed removed events) and the events missed. */
  readonly gapsByEvent = new Map<string, { gaps: number, missed: number }>()

  /** The site subscriptions are checked against; recheck() swaps it ([SITE-RELOAD-5]). */
  private site: Site
  /** [GROUP-*] consumer groups: their members' subscriptions are not in `subs`. */
  readonly groups: Groups

  constructor (private readonly ctx: DeliveryContext) {
    this.site = ctx.site
    this.groups = new Groups({ store: ctx.store, clock: ctx.clock, logger: ctx.logger, limits: ctx.groups ?? GROUP_DEFAULTS, maxEventsPerFrame: ctx.limits.maxEventsPerFrame, maxFrameBytes: ctx.limits.maxFrameBytes,
      maxWindow: ctx.limits.maxWindow,
      onDelivered: (name, n) => {
        this.delivered += n
        this.deliveredByEvent.set(name, (this.deliveredByEvent.get(name) ?? 0) + n)
      }
    })
  }

  /** A client connected. A previous session with the same key is closed first ([CLI-TAKEOVER-1]). */
  open (principal: ClientPrincipal, output: SessionOutput): ClientSession {
    const old = this.sessions.get(principal.key)
    if (old !== undefined) this.close(old)
    const l = this.ctx.limits
    // [CLI-GUEST-1] guests get the tighter limits
    const limits: SessionLimits = principal.user === null
      ? { maxSubscriptions: l.guestMaxSubscriptions, maxWindow: l.guestMaxWindow, maxInflightBytes: l.guestMaxConnectionInflightBytes }
      : { maxSubscriptions: l.maxSubscriptions, maxWindow: l.maxWindow, maxInflightBytes: l.maxConnectionInflightBytes }
    const session = new ClientSession(principal, output, limits)
    this.sessions.set(principal.key, session)
    return session
  }

  /** A blocked connection drained: its waiting subscriptions go on ([CLI-BACKPRESSURE-1]). */
  drained (session: ClientSession): void {
    this.resume(session)
    this.groups.drained(session)
  }


  /** A client went away: its subscriptions end; the client will resume from its own positions. */
  close (session: ClientSession): void {
    if (session.closed) return
    session.closed = true
    for (const sub of session.subs.values()) this.removeSub(sub)
    session.subs.clear()
    session.waiting.clear()
    this.groups.sessionClosed(session)
    if (this.sessions.get(session.key) === session) this.sessions.delete(session.key)
  }

  /**
   * A site reload ([SITE-RELOAD-5]): checks every live subscription against `site` with its user's
   * new definition (`userOf`; null: the user is gone, its connections are being closed). A
   * subscription to an event removed or no longer receivable ends with a CONTROL error for it
   * (UNKNOWN_EVENT, NOT_AUTHORIZED) naming the event; what it was sent and not acknowledged comes
   * again when it is granted again, from the client's position. The others go on with the new
   * definition. Returns the sessions, for the caller's notices.
   */
  recheck (site: Site, userOf: (session: ClientSession) => ClientPrincipal | null): ClientSession[] {
    this.site = site
    const all = [...this.sessions.values()]
    for (const session of all) {
      const principal = userOf(session)
      if (principal === null) continue
      session.principal = principal
      const user = principal.user
      let ended = false
      for (const sub of [...session.subs.values()]) {
        const def = site.events.get(sub.def.name)
        let refusal: [ErrorCode, string] | null = null
        if (def === undefined) refusal = [ErrorCode.UNKNOWN_EVENT, `event "${sub.def.name}" was removed from the site`]
        else if (!mayReceive(def, user) || (def.category === 'private' && user === null)) refusal = [ErrorCode.NOT_AUTHORIZED, `${user === null ? 'a guest' : `user "${user.name}"`} may no longer receive "${def.name}" (the site changed)`]
        if (refusal === null) {
          sub.def = def as EventDefinition
          continue
        }
        this.removeSub(sub)
        session.subs.delete(sub.id)
        ended = true
        this.control(session, { op: 'error', sub: sub.id, code: refusal[0], message: refusal[1] })
      }
      if (this.groups.recheck(site, session)) ended = true
      if (ended) this.resume(session)
    }
    return all
  }

  /** Tells a session that it may receive more than before ([SITE-RELOAD-5]). */
  notifyAccessGranted (session: ClientSession): void {
    if (!session.closed) this.control(session, { op: 'accessGranted' })
  }

  get sessionCount (): number {
    return this.sessions.size
  }

  /**
   * Per event name: subscriptions, and the largest and summed lag, in positions between `head` and
   * the last position sent to each subscription; a subscription caught up (its last read found
   * nothing more) has none. A walk over the subscriptions, for metrics at scrape time.
   */
  lag (head: number): Map<string, SubscriptionLag> {
    const out = new Map<string, SubscriptionLag>()
    for (const [name, subs] of this.byEvent) {
      const l: SubscriptionLag = { subscriptions: 0, max: 0, total: 0 }
      for (const sub of subs) {
        const lag = sub.caughtUp ? 0 : Math.max(0, head - sub.cursor)
        l.subscriptions++
        l.total += lag
        if (lag > l.max) l.max = lag
      }
      out.set(name, l)
    }
    return out
  }

  /** Up to `max` client sessions with their subscriptions and lag (for the dashboard, once a second). */
  summaries (head: number, max: number): SessionSummary[] {
    const out: SessionSummary[] = []
    for (const s of this.sessions.values()) {
      if (out.length >= max) break
      const subscriptions: Array<{ event: string, lag: number }> = []
      for (const sub of s.subs.values()) {
        if (subscriptions.length >= 50) break
        subscriptions.push({ event: sub.def.name, lag: sub.caughtUp ? 0 : Math.max(0, head - sub.cursor) })
      }
      out.push({ key: s.key, guest: s.principal.user === null, subscriptions, subscriptionsLeftOut: s.subs.size - subscriptions.length })
    }
    return out
  }

  /** Handles a REQUEST frame from a client. */
  handleRequest (session: ClientSession, payload: Uint8Array): void {
    if (session.closed) return
    let req: Request
    try {
      req = decodeRequest(payload)
    } catch (err) {
      this.control(session, { op: 'error', sub: null, code: ErrorCode.MALFORMED_FRAME, message: (err as Error).message })
      return
    }
    switch (req.op) {
      case 'sub':
        this.subscribe(session, req)
        break
      case 'ack': {
        const sub = session.subs.get(req.sub)
        if (sub === undefined) return // acks may cross an unsubscribe
        const freed = sub.acknowledge(req.position)
        session.inflightBytes -= freed
        this.pump(sub)
        if (freed > 0) this.resume(session)
        break
      }
      case 'gjoin': {
        // [GROUP-JOIN-1] a member's id shares the connection's subscription ids and count
        if (session.subs.has(req.sub) || this.groups.has(session, req.sub)) return this.control(session, { op: 'error', sub: req.sub, code: ErrorCode.INVALID_ARGUMENT, message: `subscription id ${req.sub} is already in use on this connection` })
        if (session.subs.size + this.groups.countOf(session) >= session.limits.maxSubscriptions) return this.control(session, { op: 'error', sub: req.sub, code: ErrorCode.CAPACITY_EXCEEDED, message: `at most ${session.limits.maxSubscriptions} subscriptions per connection` })
        this.groups.join(session, req, this.site)
        break
      }
      case 'gack':
        this.groups.ack(session, req)
        break
      case 'unsub': {
        if (this.groups.leave(session, req.sub)) break
        const sub = session.subs.get(req.sub)
        if (sub !== undefined) {
          this.removeSub(sub)
          session.subs.delete(req.sub)
          this.resume(session)
        }
        break
      }
    }
  }

  /** Checks a subscription against the site ([CLI-SUB-1] .. [CLI-SUB-4]) and starts it. */
  private subscribe (session: ClientSession, req: Extract<Request, { op: 'sub' }>): void {
    const fail = (code: ErrorCode, message: string): void => { this.control(session, { op: 'error', sub: req.sub, code, message }) }
    if (session.subs.has(req.sub) || this.groups.has(session, req.sub)) return fail(ErrorCode.INVALID_ARGUMENT, `subscription id ${req.sub} is already in use on this connection`)
    const limits = session.limits
    if (session.subs.size >= limits.maxSubscriptions) return fail(ErrorCode.CAPACITY_EXCEEDED, `at most ${limits.maxSubscriptions} subscriptions per ${session.principal.user === null ? 'guest ' : ''}connection`)
    const def = this.site.events.get(req.event)
    if (def === undefined) return fail(ErrorCode.UNKNOWN_EVENT, `event "${req.event}" is not defined in the site`)
    const user = session.principal.user
    if (!mayReceive(def, user)) return fail(ErrorCode.NOT_AUTHORIZED, `${user === null ? 'a guest' : `user "${user.name}"`} may not receive "${def.name}"`)
    if (def.category === 'private' && user === null) return fail(ErrorCode.NOT_AUTHORIZED, 'private events are only delivered to authenticated clients')
    if (req.services !== null) {
      const bad = req.services.find((s) => !isValidName(s))
      if (bad !== undefined) return fail(ErrorCode.INVALID_ARGUMENT, `service id ${JSON.stringify(bad)} is not a valid name`)
    }
    let keys: ReadonlySet<string> | null = null
    if (req.keys !== undefined) {
      // [CLI-KEY-1] a key filter: only on a keyed event, each a valid key (the codec bounds the count)
      if (def.key === undefined) return fail(ErrorCode.INVALID_ARGUMENT, `event "${def.name}" is not keyed: a subscription to it takes no keys`)
      for (const k of req.keys) {
        const problem = keyProblem(k)
        if (problem !== null) return fail(ErrorCode.INVALID_ARGUMENT, `key ${JSON.stringify(k)}: ${problem}`)
      }
      keys = new Set(req.keys)
    }
    const store = this.ctx.store
    const head = store.head()
    // [CLUSTER-RESET-1] a shared store's head may trail another broker's commit: read it before a reset
    if (req.position > head && store.freshHead !== undefined) {
      return this.later(session, req, store.freshHead().then((fresh) => { this.start(session, req, def, keys, Math.max(head, fresh)) }))
    }
    this.start(session, req, def, keys, head)
  }

  /** Runs the rest of a subscribe once a shared store answered ([PG-ASYNC-1]); a failed read is told. */
  private later (session: ClientSession, req: Extract<Request, { op: 'sub' }>, p: Promise<void>): void {
    p.catch((err: unknown) => {
      this.ctx.logger.error({ err, event: req.event }, 'event store read for a subscription start failed')
      if (!session.closed) this.control(session, { op: 'error', sub: req.sub, code: ErrorCode.PERSISTENCE_FAILED, message: 'the broker could not read its event store; subscribe again later' })
    })
  }

  /** Where a checked subscription starts ([CLI-START-*], [CLI-RESET-1]), given the head. */
  private start (session: ClientSession, req: Extract<Request, { op: 'sub' }>, def: EventDefinition, keys: ReadonlySet<string> | null, head: number): void {
    const fail = (code: ErrorCode, message: string): void => { this.control(session, { op: 'error', sub: req.sub, code, message }) }
    const store = this.ctx.store
    // [CLI-RESET-1] a position ahead of the broker's head means the broker's store was replaced:
    // start over from everything it holds, and say so
    const reset = req.position > head
    if (reset) return this.begin(session, req, def, head, 0, [], keys, reset)
    if (req.position > 0 || req.start === 'all') return this.begin(session, req, def, head, req.position, [], keys, reset)
    if (req.start === 'new') return this.begin(session, req, def, head, head, [], keys, reset)
    if (req.start === 'latest') {
      // [CLI-START-4] the newest instance per service, then everything new
      if (store.latestPerService === undefined) return fail(ErrorCode.INVALID_ARGUMENT, 'this broker\'s event store cannot start a subscription at the latest instances')
      // [CLI-START-4] per service and per key for a keyed event
      const latest = store.latestPerService({ event: def.name, services: req.services === null ? null : new Set(req.services), keys, recipient: def.category === 'private' ? session.key : null, now: this.ctx.clock.now() })
      const go = (l: number[]): void => { this.begin(session, req, def, head, l.length === 0 ? head : (l[0] as number) - 1, l, keys, reset) }
      if (isPromise(latest)) return this.later(session, req, latest.then(go))
      return go(latest)
    }
    if ('position' in req.start) return this.begin(session, req, def, head, Math.min(Math.max(0, req.start.position - 1), head), [], keys, reset) // [CLI-START-2]
    // [CLI-START-3] the first event received at or after the time; none: only new events
    if (store.positionAt === undefined) return fail(ErrorCode.INVALID_ARGUMENT, 'this broker\'s event store cannot start a subscription at a time')
    const at = store.positionAt(req.start.time)
    const go = (a: number | null): void => { this.begin(session, req, def, head, a === null ? head : a - 1, [], keys, reset) }
    if (isPromise(at)) return this.later(session, req, at.then(go))
    go(at)
  }

  /** Registers a subscription that starts after `start` and pumps it. */
  private begin (session: ClientSession, req: Extract<Request, { op: 'sub' }>, def: EventDefinition, head: number, start: number, latest: number[], keys: ReadonlySet<string> | null, reset: boolean): void {
    // after an asynchronous start, the connection may be gone or the id taken meanwhile
    if (session.closed) return
    if (session.subs.has(req.sub)) return this.control(session, { op: 'error', sub: req.sub, code: ErrorCode.INVALID_ARGUMENT, message: `subscription id ${req.sub} is already in use on this connection` })
    const limits = session.limits
    const window = Math.min(req.window, limits.maxWindow)
    const sub = new Subscription(req.sub, def, req.services === null ? null : new Set(req.services), def.category === 'private' ? session.key : null, window, this.ctx.limits.maxInflightBytes, start)
    sub.gaps = req.gaps === true
    sub.keys = keys
    if (latest.length > 0) {
      sub.only = { until: head, keep: new Set(latest) }
      sub.gapFloor = head // what it skips on purpose is no gap
    }
    session.subs.set(req.sub, sub)
    this.owner.set(sub, session)
    let set = this.byEvent.get(def.name)
    if (set === undefined) this.byEvent.set(def.name, set = new Set())
    set.add(sub)
    this.control(session, { op: 'subscribed', sub: req.sub, category: def.category, head: start, reset })
    this.pump(sub)
  }

  private removeSub (sub: Subscription): void {
    sub.closed = true
    this.readQueue.delete(sub)
    const session = this.owner.get(sub)
    if (session !== undefined) {
      session.waiting.delete(sub)
      session.inflightBytes -= sub.bytesInFlight
    }
    const set = this.byEvent.get(sub.def.name)
    if (set !== undefined) {
      set.delete(sub)
      if (set.size === 0) this.byEvent.delete(sub.def.name)
    }
  }

  /** Newly committed events ([CLI-LIVE-1]): caught-up subscriptions get them without a read. */
  onStored (events: readonly StoredEvent[]): void {
    this.groups.onStored(events)
    const now = this.ctx.clock.now()
    let i = 0
    while (i < events.length) {
      // events of one flush are usually of few names: take runs of the same name
      const name = (events[i] as StoredEvent).name
      let j = i + 1
      while (j < events.length && (events[j] as StoredEvent).name === name) j++
      const subs = this.byEvent.get(name)
      if (subs !== undefined) {
        const run = events.slice(i, j)
        for (const sub of subs) this.offer(sub, run, now)
      }
      i = j
    }
  }

  private offer (sub: Subscription, events: readonly StoredEvent[], now: number): void {
    if (sub.reading) {
      sub.dirty = true
      return
    }
    if (!sub.caughtUp) {
      this.pump(sub)
      return
    }
    const matching = events.filter((e) => sub.matches(e) && (e.expiresAt === null || e.expiresAt > now))
    if (matching.length === 0) return
    const session = this.owner.get(sub)
    if (session === undefined || session.closed) return
    if (this.send(sub, session, matching) < matching.length) {
      // what did not fit is read from the store when there is room again, not kept here
      sub.caughtUp = false
      this.pump(sub)
    }
  }

  /**
   * Reads what a subscription has not been sent yet, within its window ([CLI-WINDOW-1]) and its
   * connection's limits ([CLI-BACKPRESSURE-1]).
   */
  private pump (sub: Subscription): void {
    if (sub.closed || sub.reading || sub.caughtUp) return
    const credit = sub.credit
    if (credit <= 0) return // its own ack calls again
    const session = this.owner.get(sub)
    if (session === undefined || session.closed) return
    if (session.output.blocked || session.bytesLeft <= 0) {
      session.waiting.add(sub) // drained() or an ack on the connection calls again
      return
    }
    if (this.reads >= this.ctx.limits.maxConcurrentReads) {
      this.readQueue.add(sub)
      return
    }
    const told = this.checkGap(sub, session)
    const limit = Math.min(credit, this.ctx.limits.maxEventsPerFrame)
    const maxBytes = Math.max(1, Math.min(sub.bytesLeft, session.bytesLeft, this.ctx.limits.maxFrameBytes))
    sub.reading = true
    sub.dirty = false
    this.reads++
    session.reservedBytes += maxBytes
    const read = (): Promise<StoredEvent[]> => this.ctx.store.read({ event: sub.def.name, after: sub.cursor, services: sub.services, keys: sub.keys, recipient: sub.recipient, now: this.ctx.clock.now(), limit, maxBytes })
    ;(told === undefined ? read() : told.then(read)).then((events) => {
      this.reads--
      session.reservedBytes -= maxBytes
      sub.reading = false
      if (!sub.closed && !session.closed) {
        let bytes = 0
        for (const e of events) bytes += e.payload.byteLength
        // [CLI-START-4] up to the head it started at, a `latest` subscription gets only the kept positions
        const only = sub.only
        const toSend = only === null ? events : events.filter((e) => e.position > only.until || only.keep.has(e.position))
        const sent = toSend.length > 0 ? this.send(sub, session, toSend) : 0
        if (only !== null && sent === toSend.length && events.length > 0) {
          sub.cursor = Math.max(sub.cursor, (events[events.length - 1] as StoredEvent).position) // past what it skipped
          if (sub.cursor >= only.until) sub.only = null
        }
        if (sent < toSend.length) this.pump(sub) // stopped by a limit: pump puts it where it waits
        else if (events.length < limit && bytes < maxBytes && !sub.dirty) sub.caughtUp = true
        else this.pump(sub)
        if (!session.output.blocked && session.bytesLeft > 0) this.resume(session)
      }
      this.nextRead()
    }, (err: unknown) => {
      this.reads--
      session.reservedBytes -= maxBytes
      sub.reading = false
      this.ctx.logger.error({ err, event: sub.def.name }, 'event store read failed')
      // the subscription ends here; the client resubscribes from its own position later
      this.removeSub(sub)
      if (!session.closed) {
        session.subs.delete(sub.id)
        this.control(session, { op: 'error', sub: sub.id, code: ErrorCode.PERSISTENCE_FAILED, message: 'the broker could not read stored events; resubscribe later' })
        this.resume(session)
      }
      this.nextRead()
    })
  }

  /**
   * [CLI-GAP-1] Before a read: were events of this subscription removed (pushed out, expired) above
   * its cursor since it last looked? One comparison of the event name's removal epoch when not; a
   * walk over that name's removal runs when it changed. Counted for every subscription; told to a
   * client that asked ([CLI-GAP-3]), before the EVENTS frame this read makes.
   */
  private checkGap (sub: Subscription, session: ClientSession): Promise<void> | undefined {
    const store = this.ctx.store
    if (store.removalEpoch === undefined || store.gap === undefined) return
    const epoch = store.removalEpoch(sub.def.name)
    const first = !sub.gapChecked
    if (!first && epoch === sub.removalSeen) return
    sub.gapChecked = true
    // expired events already told of (and purged since) are not told again
    const after = Math.max(sub.cursor, sub.gapFloor)
    const query = { event: sub.def.name, after, services: sub.services, recipient: sub.recipient }
    const gap: Gap | null = epoch === sub.removalSeen ? null : store.gap({ ...query, sinceEpoch: sub.removalSeen })
    sub.removalSeen = epoch
    // [CLI-GAP-2] once per subscription start: expired events the purge has not deleted yet, which a read skips
    const found = first && sub.def.lifetimeMs !== null ? store.expiredUnpurged?.({ ...query, now: this.ctx.clock.now() }) ?? null : null
    // [PG-ASYNC-1] a shared store answers later: the read waits for it, so the notice still comes first
    if (isPromise(found)) return found.then((u) => { if (!sub.closed && !session.closed) this.tellGap(sub, session, gap, u, after) })
    this.tellGap(sub, session, gap, found, after)
  }

  /** Adds the expired-unpurged events to a gap, counts it and tells it ([CLI-GAP-2], [CLI-GAP-3]). */
  private tellGap (sub: Subscription, session: ClientSession, found: Gap | null, unpurged: ExpiredUnpurged | null, after: number): void {
    let gap = found
    if (unpurged !== null) {
      gap = {
        event: sub.def.name,
        services: [...new Set([...(gap?.services ?? []), ...unpurged.services])].sort().slice(0, 100),
        missed: (gap?.missed ?? 0) + unpurged.count,
        exact: gap?.exact ?? true,
        pushedOut: gap?.pushedOut ?? 0,
        expired: (gap?.expired ?? 0) + unpurged.count,
        upTo: Math.max(gap?.upTo ?? 0, unpurged.upTo)
      }
    }
    if (gap === null) return
    // the expired events told of now are removed by a later purge: not told again then
    if (unpurged !== null) sub.gapFloor = Math.max(sub.gapFloor, unpurged.upTo)
    let g = this.gapsByEvent.get(gap.event)
    if (g === undefined) this.gapsByEvent.set(gap.event, g = { gaps: 0, missed: 0 })
    g.gaps++
    g.missed += gap.missed
    this.ctx.logger.debug({ client: session.key, event: gap.event, missed: gap.missed, exact: gap.exact, after: sub.cursor }, 'subscription missed removed events')
    if (sub.gaps) this.control(session, { op: 'gap', sub: sub.id, ...gap, after })
  }

  /** Starts the reads that waited for a slot. */
  private nextRead (): void {
    for (const sub of this.readQueue) {
      if (this.reads >= this.ctx.limits.maxConcurrentReads) return
      this.readQueue.delete(sub)
      this.pump(sub)
    }
  }

  /**
   * Lets the subscriptions a connection's limits stopped go on, oldest first, while the connection
   * has room ([CLI-BACKPRESSURE-1]). One that is stopped again goes to the back of the line.
   */
  private resume (session: ClientSession): void {
    if (session.closed) return
    for (const sub of session.waiting) {
      if (session.output.blocked || session.bytesLeft <= 0) return
      session.waiting.delete(sub)
      this.pump(sub)
    }
  }

  /**
   * Sends as many of `events` as the subscription's window and the connection's budget allow, in
   * frames, and stops at a frame boundary when the connection blocks. Returns how many were sent.
   */
  private send (sub: Subscription, session: ClientSession, events: readonly StoredEvent[]): number {
    if (session.output.blocked) return 0
    const n = fitting(events, sub.credit, Math.min(sub.bytesLeft, session.bytesLeft))
    if (n === 0) return 0
    const now = this.ctx.clock.now()
    let sent = 0
    for (const chunk of frameChunks(n === events.length ? events : events.slice(0, n), this.ctx.limits.maxEventsPerFrame, this.ctx.limits.maxFrameBytes)) {
      if (session.output.blocked) break
      session.output.write(encodeEvents(sub.id, now, chunk))
      sent += chunk.length
    }
    session.inflightBytes += sub.markSent(events, sent)
    this.delivered += sent
    if (sent > 0) this.deliveredByEvent.set(sub.def.name, (this.deliveredByEvent.get(sub.def.name) ?? 0) + sent)
    return sent
  }

  private control (session: ClientSession, c: Control): void {
    // control frames are small and bounded by the requests: written even to a blocked connection
    session.output.write(encodeControl(c))
  }
}

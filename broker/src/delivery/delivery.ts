/**
 * The broker's side of subscriptions ([CLI-*] in docs/protocol.md): answers REQUEST frames, reads
 * stored events for subscriptions that are behind, pushes newly stored events straight from memory
 * to subscriptions that are caught up, and keeps each subscription within its in-flight window.
 */
import {
  decodeRequest, encodeControl, encodeEvents, ErrorCode, frameChunks, isValidName, mayReceive,
  type Clock, type Control, type Logger, type Request, type Site, type StoredEvent
} from '@herald/shared'
import type { ClientPrincipal } from '../auth/principal.js'
import type { EventStore } from '../event-store/event-store.js'
import { Subscription } from './subscription.js'

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
}

export interface DeliveryContext {
  readonly site: Site
  readonly store: EventStore
  readonly clock: Clock
  readonly logger: Logger
  readonly limits: DeliveryLimits
  sendToClient (key: string, frame: Buffer): void
}

/** A connected client endpoint and its subscriptions. */
export class ClientSession {
  readonly subs = new Map<number, Subscription>()
  closed = false
  constructor (readonly principal: ClientPrincipal) {}
  get key (): string { return this.principal.key }
}

export class Delivery {
  private readonly sessions = new Map<string, ClientSession>()
  private readonly byEvent = new Map<string, Set<Subscription>>()
  private readonly owner = new WeakMap<Subscription, ClientSession>()
  /** Events sent to clients, for status and tests. */
  delivered = 0

  constructor (private readonly ctx: DeliveryContext) {}

  /** A client connected. A previous session with the same key is closed first ([CLI-TAKEOVER-1]). */
  open (principal: ClientPrincipal): ClientSession {
    const old = this.sessions.get(principal.key)
    if (old !== undefined) this.close(old)
    const session = new ClientSession(principal)
    this.sessions.set(principal.key, session)
    return session
  }

  /** A client went away: its subscriptions end; the client will resume from its own positions. */
  close (session: ClientSession): void {
    if (session.closed) return
    session.closed = true
    for (const sub of session.subs.values()) this.removeSub(sub)
    session.subs.clear()
    if (this.sessions.get(session.key) === session) this.sessions.delete(session.key)
  }

  get sessionCount (): number {
    return this.sessions.size
  }

  /** Handles a REQUEST frame from a client. */
  handleRequest (session: ClientSession, payload: Buffer): void {
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
        sub.acknowledge(req.position)
        this.pump(sub)
        break
      }
      case 'unsub': {
        const sub = session.subs.get(req.sub)
        if (sub !== undefined) {
          this.removeSub(sub)
          session.subs.delete(req.sub)
        }
        break
      }
    }
  }

  /** Checks a subscription against the site ([CLI-SUB-1] .. [CLI-SUB-4]) and starts it. */
  private subscribe (session: ClientSession, req: Extract<Request, { op: 'sub' }>): void {
    const fail = (code: ErrorCode, message: string): void => { this.control(session, { op: 'error', sub: req.sub, code, message }) }
    if (session.subs.has(req.sub)) return fail(ErrorCode.INVALID_ARGUMENT, `subscription id ${req.sub} is already in use on this connection`)
    if (session.subs.size >= this.ctx.limits.maxSubscriptions) return fail(ErrorCode.CAPACITY_EXCEEDED, `at most ${this.ctx.limits.maxSubscriptions} subscriptions per connection`)
    const def = this.ctx.site.events.get(req.event)
    if (def === undefined) return fail(ErrorCode.UNKNOWN_EVENT, `event "${req.event}" is not defined in the site`)
    const user = session.principal.user
    if (!mayReceive(def, user)) return fail(ErrorCode.NOT_AUTHORIZED, `${user === null ? 'a guest' : `user "${user.name}"`} may not receive "${def.name}"`)
    if (def.category === 'private' && user === null) return fail(ErrorCode.NOT_AUTHORIZED, 'private events are only delivered to authenticated clients')
    if (req.services !== null) {
      const bad = req.services.find((s) => !isValidName(s))
      if (bad !== undefined) return fail(ErrorCode.INVALID_ARGUMENT, `service id ${JSON.stringify(bad)} is not a valid name`)
    }
    const head = this.ctx.store.head()
    // [CLI-RESET-1] a position ahead of the broker's head means the broker's store was replaced:
    // start over from everything it holds, and say so
    const reset = req.position > head
    const start = reset ? 0 : req.position > 0 ? req.position : req.start === 'new' ? head : 0
    const window = Math.min(req.window, this.ctx.limits.maxWindow)
    const sub = new Subscription(req.sub, def, req.services === null ? null : new Set(req.services), def.category === 'private' ? session.key : null, window, this.ctx.limits.maxInflightBytes, start)
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
    const set = this.byEvent.get(sub.def.name)
    if (set !== undefined) {
      set.delete(sub)
      if (set.size === 0) this.byEvent.delete(sub.def.name)
    }
  }

  /** Newly committed events ([CLI-LIVE-1]): caught-up subscriptions get them without a read. */
  onStored (events: readonly StoredEvent[]): void {
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
    if (matching.length <= sub.credit) {
      this.send(sub, matching)
    } else {
      sub.caughtUp = false
      this.pump(sub)
    }
  }

  /** Reads what a subscription has not been sent yet, within its window ([CLI-WINDOW-1]). */
  private pump (sub: Subscription): void {
    if (sub.closed || sub.reading || sub.caughtUp) return
    const credit = sub.credit
    if (credit <= 0) return
    const limit = Math.min(credit, this.ctx.limits.maxEventsPerFrame)
    sub.reading = true
    sub.dirty = false
    this.ctx.store.read({ event: sub.def.name, after: sub.cursor, services: sub.services, recipient: sub.recipient, now: this.ctx.clock.now(), limit }).then((events) => {
      sub.reading = false
      if (sub.closed) return
      if (events.length > 0) this.send(sub, events)
      if (events.length < limit && !sub.dirty) sub.caughtUp = true
      else this.pump(sub)
    }, (err: unknown) => {
      sub.reading = false
      this.ctx.logger.error({ err, event: sub.def.name }, 'event store read failed')
      // the subscription ends here; the client resubscribes from its own position later
      this.removeSub(sub)
      const session = this.owner.get(sub)
      if (session !== undefined) {
        session.subs.delete(sub.id)
        this.control(session, { op: 'error', sub: sub.id, code: ErrorCode.PERSISTENCE_FAILED, message: 'the broker could not read stored events; resubscribe later' })
      }
    })
  }

  private send (sub: Subscription, events: readonly StoredEvent[]): void {
    const session = this.owner.get(sub)
    if (session === undefined || session.closed) return
    const now = this.ctx.clock.now()
    for (const chunk of frameChunks(events, this.ctx.limits.maxEventsPerFrame, this.ctx.limits.maxFrameBytes)) {
      this.ctx.sendToClient(session.key, encodeEvents(sub.id, now, chunk))
    }
    sub.markSent(events)
    this.delivered += events.length
  }

  private control (session: ClientSession, c: Control): void {
    this.ctx.sendToClient(session.key, encodeControl(c))
  }
}

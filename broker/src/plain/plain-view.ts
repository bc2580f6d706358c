/**
 * The plain-MQTT view ([PLAIN-VIEW-*] in docs/protocol.md): ordinary MQTT 3.1.1 clients, logged in
 * as a site user or a guest, subscribe to `herald/v1/events/...` and get stored events as a JSON
 * envelope, only those their user may read. Replacing events are retained: a new subscription gets
 * the last stored instance of each (service, event) it matches at once, read from the event store
 * (never from aedes' retained store, [CONN-RETAIN-1]). Queueing and private events are live only.
 *
 * The packets go straight onto the connection's stream, as the endpoints' frames do
 * (connection-writer.ts), bounded: QoS 0 events are dropped above `maxQueuedBytes`, a connection
 * above it for `slowTimeoutMs` or past `hardLimitBytes` is closed; QoS 1 events beyond `maxInflight`
 * not acknowledged wait (within `hardLimitBytes`), and a full window without a PUBACK for
 * `slowTimeoutMs` closes the connection. aedes keeps no state for these packets (clean sessions):
 * the packet ids are the view's, and it reads the PUBACKs off aedes' parser.
 */
import type { Duplex } from 'node:stream'
import type { AedesOptions, Client } from 'aedes'
import { PayloadKind, eventViewTopic, mayReceive, silentLogger, systemClock, type Clock, type EventDefinition, type Logger, type Site, type StoredEvent, type UserDefinition } from '@herald/protocol'
import type { PlainPrincipal } from '../auth/principal.js'
import type { EventStore } from '../event-store/event-store.js'
import { publishHeader } from '../delivery/publish-header.js'

type Subscription = Parameters<NonNullable<AedesOptions['authorizeSubscribe']>>[1]
type SubscribeDone = Parameters<NonNullable<AedesOptions['authorizeSubscribe']>>[2]

/** The bounds of the view, per plain connection. */
export interface PlainViewLimits {
  /** Most subscriptions (topic filters) on one plain connection; more are refused (SUBACK 0x80). */
  readonly maxSubscriptions: number
  /** Above this many unsent bytes the connection is blocked: QoS 0 events to it are dropped, retained values wait. */
  readonly maxQueuedBytes: number
  /** A connection blocked this long (ms) is closed. */
  readonly slowTimeoutMs: number
  /** A connection whose unsent bytes pass this (QoS 1 events are written while blocked) is closed at once. */
  readonly hardLimitBytes: number
  /** Most QoS 1 events sent and not acknowledged (PUBACK) on one connection; more wait for room. */
  readonly maxInflight: number
  /** Most event store reads for retained values under way at once, across all plain connections. */
  readonly maxConcurrentReads: number
}

/** Why the view closed a plain connection. */
export type PlainCloseReason = 'stuck' | 'overflow' | 'inflight'

export interface PlainViewOptions {
  /** The current site: access is checked against it for every event ([PLAIN-VIEW-5]). */
  readonly site: () => Site
  readonly store: EventStore
  readonly limits: PlainViewLimits
  readonly clock?: Clock
  readonly logger?: Logger
  /** The view closed a connection (counted and logged by the broker). */
  readonly onClose?: (client: Client, reason: PlainCloseReason, queuedBytes: number) => void
}

/** Counters of the view since the broker started. */
export interface PlainViewStats {
  /** Plain connections with at least one subscription now. */
  readonly subscribers: number
  /** Subscriptions of plain connections now. */
  readonly subscriptions: number
  /** Events sent (live and retained; once per connection). */
  readonly sent: number
  /** QoS 0 events not sent because the connection was above its queued-bytes bound. */
  readonly dropped: number
  /** Connections closed by the view, by reason. */
  readonly closed: Readonly<Record<PlainCloseReason, number>>
}

/** Events read per page of the retained burst, and the page's payload bytes ([PLAIN-VIEW-7]). */
const RETAINED_PAGE_EVENTS = 200
const RETAINED_PAGE_BYTES = 256 * 1024

const ROOT_LEVELS = ['herald', 'v1', 'events'] as const

/** Whether MQTT topic filter levels match topic levels (MQTT 3.1.1, 4.7). */
export function filterMatches (filter: readonly string[], topic: readonly string[]): boolean {
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i]
    if (f === '#') return true
    if (i >= topic.length) return false
    if (f !== '+' && f !== topic[i]) return false
  }
  return filter.length === topic.length
}

/**
 * [PLAIN-VIEW-2] Whether a filter can match some topic of the view: `herald/v1/events/<event>/<service>`
 * or `.../<service>/<user>/<clientName>` (private events), with any names.
 */
export function filterCanMatchView (filter: readonly string[]): boolean {
  const shape = (length: number): boolean => {
    for (let i = 0; i < filter.length; i++) {
      const f = filter[i] as string
      if (f === '#') return true
      if (i >= length) return false
      if (f === '+') continue
      if (i < ROOT_LEVELS.length ? f !== ROOT_LEVELS[i] : f === '') return false
    }
    return filter.length === length
  }
  return shape(5) || shape(7)
}

/** The view topic of a stored event ([TOPIC-VIEW-1]): private events under their recipient, keyed ones under `k/<key>` ([PLAIN-VIEW-9]). */
export function viewTopic (e: StoredEvent): string {
  const t = eventViewTopic(e.name, e.serviceId)
  if (e.key !== undefined) return `${t}/k/${topicLevelOfKey(e.key)}`
  return e.recipient === null ? t : `${t}/${e.recipient}`
}

/**
 * [PLAIN-VIEW-9] A replacing key as one topic level: `%`, `/`, `+` and `#` percent-encoded (`%25`,
 * `%2F`, `%2B`, `%23`), everything else as it is.
 */
export function topicLevelOfKey (key: string): string {
  return key.replace(/[%/+#]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)
}

/** What a retained value replaces ([PLAIN-VIEW-4]): its (service, event), and its key for a keyed event. */
function retainedSlot (e: StoredEvent): string {
  return e.key === undefined ? `${e.serviceId}\0${e.name}` : `${e.serviceId}\0${e.name}\0${e.key}`
}

/** [PLAIN-VIEW-3] The JSON envelope of a stored event (JSON payloads spliced in as they were validated at upload). */
export function viewEnvelope (e: StoredEvent): Buffer {
  const p = Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength)
  const [encoding, payload] = e.isNull || e.payloadKind === PayloadKind.none
    ? ['none', 'null']
    : e.payloadKind === PayloadKind.bytes ? ['base64', JSON.stringify(p.toString('base64'))] : ['json', p.toString('utf8')]
  const head = `{"id":${JSON.stringify(`${e.instance}-${e.seq}`)},"service":${JSON.stringify(e.serviceId)},"event":${JSON.stringify(e.name)},` +
    `"category":"${e.category}",${e.recipient !== null ? `"recipient":${JSON.stringify(e.recipient)},` : ''}${e.key !== undefined ? `"key":${JSON.stringify(e.key)},` : ''}"position":${e.position},` +
    `"raisedAt":${e.raisedAt},"receivedAt":${e.receivedAt},"isNull":${e.isNull},"payloadEncoding":"${encoding}","payload":`
  return Buffer.from(`${head}${payload}}`, 'utf8')
}

/** One event on its way to the plain subscribers: topic and envelope built once, on first use. */
class Outgoing {
  private levelsCache: string[] | null = null
  private topicCache: Buffer | null = null
  private bodyCache: Buffer | null = null
  constructor (readonly event: StoredEvent) {}
  get levels (): string[] { return (this.levelsCache ??= viewTopic(this.event).split('/')) }
  get topic (): Buffer { return (this.topicCache ??= Buffer.from(viewTopic(this.event), 'utf8')) }
  get body (): Buffer { return (this.bodyCache ??= viewEnvelope(this.event)) }
}

interface PlainSub {
  readonly filter: string
  readonly levels: readonly string[]
  readonly qos: 0 | 1
}

/** One plain connection with subscriptions. */
class PlainConnection {
  readonly subs = new Map<string, PlainSub>()
  /** Filters granted by authorizeSubscribe whose SUBACK has not gone yet. */
  readonly pending = new Map<string, PlainSub>()
  /** The user as the current site has it (recheck() refreshes it); null: a guest. */
  user: UserDefinition | null
  /** The user was removed from the site: it reads nothing. */
  removed = false
  /** Event names readable at the last access check, to find newly granted ones on recheck(). */
  readable = new Set<string>()
  readonly inflight = new Set<number>()
  /** QoS 1 events waiting for room in the in-flight window, in order, and their bytes. */
  readonly waiting: Array<{ out: Outgoing, retain: boolean }> = []
  waitingBytes = 0
  /** Runs while the window is full: no PUBACK for this long closes the connection. */
  ackTimer: NodeJS.Timeout | null = null
  /** A PUBACK freed room in the window. */
  onAck: () => void = () => {}
  private nextId = 1
  blocked = false
  private timer: NodeJS.Timeout | null = null
  closed = false
  /** Retained bursts to run, one per filter at most, in order. */
  readonly bursts = new Map<string, { sub: PlainSub, events: readonly string[] | null }>()
  bursting = false
  /** While bursting: the newest position sent live per replacing (service, event), so a burst never sends an older instance after it. */
  readonly liveSent = new Map<string, number>()
  private waiters: Array<() => void> = []
  readonly conn: Duplex
  private acksHooked = false

  constructor (readonly client: Client, readonly principal: PlainPrincipal) {
    this.conn = client.conn
    this.user = principal.user
  }

  hookAcks (): void {
    if (this.acksHooked) return
    this.acksHooked = true
    // aedes keeps no state for QoS 1 to a clean session: its PUBACK handler finds nothing; the
    // view reads the packet ids here (aedes' parser emits every packet it reads)
    const parser = (this.client as unknown as { _parser: { on (ev: 'packet', f: (p: { cmd: string, messageId?: number }) => void): void } })._parser
    parser.on('packet', (p) => {
      if (p.cmd === 'puback' && p.messageId !== undefined && this.inflight.delete(p.messageId)) {
        this.onAck()
        this.wake()
      }
    })
  }

  takeId (): number {
    let id = this.nextId
    while (this.inflight.has(id)) id = id >= 65535 ? 1 : id + 1
    this.nextId = id >= 65535 ? 1 : id + 1
    this.inflight.add(id)
    return id
  }

  /** Blocks the connection above the bound until 'drain'; closes it if that takes `timeoutMs`. */
  block (timeoutMs: number, onStuck: () => void): void {
    if (this.blocked) return
    this.blocked = true
    this.conn.once('drain', this.drained)
    this.timer = setTimeout(onStuck, timeoutMs)
    this.timer.unref()
  }

  private readonly drained = (): void => {
    this.blocked = false
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.wake()
  }

  wake (): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  /** Resolves when the connection may take more of a retained burst (or is closed). */
  async ready (maxInflight: number): Promise<void> {
    while (!this.closed && (this.blocked || this.inflight.size >= maxInflight || this.waiting.length > 0)) {
      await new Promise<void>((resolve) => { this.waiters.push(resolve) })
    }
  }

  close (): void {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    if (this.ackTimer !== null) clearTimeout(this.ackTimer)
    this.ackTimer = null
    this.waiting.length = 0
    this.waitingBytes = 0
    if (this.blocked) this.conn.off('drain', this.drained)
    this.blocked = false
    this.bursts.clear()
    this.wake()
  }
}

/** The read-only view of stored events for plain MQTT clients. */
export class PlainView {
  private readonly conns = new Map<Client, PlainConnection>()
  /** Connections with at least one active subscription: onStored's early return when empty. */
  private readonly active = new Set<PlainConnection>()
  private subscriptionCount = 0
  private readonly clock: Clock
  private readonly logger: Logger
  private sent = 0
  private dropped = 0
  private readonly closedBy: Record<PlainCloseReason, number> = { stuck: 0, overflow: 0, inflight: 0 }
  private readsRunning = 0
  private readonly readWaiters: Array<() => void> = []

  constructor (private readonly options: PlainViewOptions) {
    this.clock = options.clock ?? systemClock
    this.logger = options.logger ?? silentLogger
  }

  get stats (): PlainViewStats {
    return { subscribers: this.active.size, subscriptions: this.subscriptionCount, sent: this.sent, dropped: this.dropped, closed: { ...this.closedBy } }
  }

  /**
   * aedes' authorizeSubscribe for a plain connection ([PLAIN-VIEW-2]): a filter that can match a view
   * topic is granted (whether or not anything matches yet) while the connection has room; others,
   * and every filter of a service's login (ingest only), get SUBACK 0x80.
   */
  authorizeSubscribe (client: Client, principal: PlainPrincipal, sub: Subscription, done: SubscribeDone): void {
    if (principal.service !== null) return done(null, null)
    const levels = sub.topic.split('/')
    if (!filterCanMatchView(levels)) return done(null, null)
    let pc = this.conns.get(client)
    if (pc === undefined) {
      if ((client.conn as unknown as Duplex).destroyed) return done(null, null)
      this.conns.set(client, pc = new PlainConnection(client, principal))
    }
    if (!pc.subs.has(sub.topic) && !pc.pending.has(sub.topic) && pc.subs.size + pc.pending.size >= this.options.limits.maxSubscriptions) {
      this.logger.info({ clientId: client.id, topic: sub.topic, max: this.options.limits.maxSubscriptions }, 'plain subscription refused: too many subscriptions on this connection')
      return done(null, null)
    }
    // [PLAIN-VIEW-6] the view publishes at QoS 1 at most: a QoS 2 subscription gets QoS 1
    pc.pending.set(sub.topic, { filter: sub.topic, levels, qos: sub.qos >= 1 ? 1 : 0 })
    done(null, sub)
  }

  /** aedes' 'subscribe' event (after the SUBACK is written): the granted filters go live, and their retained values go out. */
  subscribed (client: Client, subs: ReadonlyArray<{ topic: string, qos: number }>): void {
    const pc = this.conns.get(client)
    if (pc === undefined || pc.closed) return
    for (const s of subs) {
      const sub = pc.pending.get(s.topic)
      pc.pending.delete(s.topic)
      if (sub === undefined || s.qos === 128) continue
      if (!pc.subs.has(sub.filter)) this.subscriptionCount++
      pc.subs.set(sub.filter, sub)
      if (sub.qos === 1) {
        pc.onAck = () => { this.acked(pc) }
        pc.hookAcks()
      }
      this.active.add(pc)
      this.queueBurst(pc, sub, null)
    }
    pc.readable = this.readableNow(pc)
  }

  /** aedes' 'unsubscribe' event. */
  unsubscribed (client: Client, topics: readonly string[]): void {
    const pc = this.conns.get(client)
    if (pc === undefined) return
    for (const t of topics) {
      if (pc.subs.delete(t)) this.subscriptionCount--
      pc.bursts.delete(t)
    }
    if (pc.subs.size === 0) this.active.delete(pc)
  }

  /** A plain connection closed. */
  closed (client: Client): void {
    const pc = this.conns.get(client)
    if (pc === undefined) return
    this.conns.delete(client)
    this.active.delete(pc)
    this.subscriptionCount -= pc.subs.size
    pc.close()
  }

  /**
   * [PLAIN-VIEW-5] Re-applies the current site's access rules to every live plain subscription, after
   * the site changed: a user's roles are read again (a removed user reads nothing from now on), and
   * replacing events a user may read now but could not before send their last values.
   */
  recheck (): void {
    const site = this.options.site()
    for (const pc of this.conns.values()) {
      if (pc.principal.user !== null) {
        const u = site.users.get(pc.principal.user.name)
        pc.removed = u === undefined
        pc.user = u ?? null
      }
      const before = pc.readable
      pc.readable = this.readableNow(pc)
      // QoS 1 messages waiting for the window go only if their user may still read them
      const keep = pc.waiting.filter((w) => {
        const def = site.events.get(w.out.event.name)
        return def !== undefined && this.mayRead(pc, def, w.out.event)
      })
      if (keep.length !== pc.waiting.length) {
        pc.waiting.splice(0, pc.waiting.length, ...keep)
        pc.waitingBytes = keep.reduce((n, w) => n + w.out.body.length, 0)
      }
      const gained = [...pc.readable].filter((n) => !before.has(n) && site.events.get(n)?.category === 'replacing')
      if (gained.length === 0) continue
      for (const sub of pc.subs.values()) this.queueBurst(pc, sub, gained)
    }
  }

  /** Events just stored (and acknowledged to their service): each goes to every plain subscriber that matches and may read it. */
  onStored (events: readonly StoredEvent[]): void {
    // [PLAIN-VIEW-8] nothing to do, at the cost of one check, while no plain client subscribes
    if (this.active.size === 0) return
    const site = this.options.site()
    // one write (writev) per connection for the whole batch, not one per event: corks nest, so
    // write()'s own cork and uncork flush nothing until these are undone
    const corked = [...this.active]
    for (const pc of corked) pc.conn.cork()
    try {
      this.sendLive(site, events)
    } finally {
      for (const pc of corked) pc.conn.uncork()
    }
  }

  private sendLive (site: Site, events: readonly StoredEvent[]): void {
    for (const e of events) {
      const def = site.events.get(e.name)
      if (def === undefined) continue
      const out = new Outgoing(e)
      for (const pc of this.active) {
        if (!this.mayRead(pc, def, e)) continue
        let qos = -1
        for (const sub of pc.subs.values()) {
          if (sub.qos > qos && filterMatches(sub.levels, out.levels)) qos = sub.qos
          if (qos === 1) break
        }
        if (qos < 0) continue
        if (pc.bursting && e.category === 'replacing') pc.liveSent.set(retainedSlot(e), e.position)
        this.send(pc, out, qos as 0 | 1, false)
      }
    }
  }

  /** [SITE-ACCESS-1/2] and [PLAIN-VIEW-1]: the event's access rule; private events only to their recipient's user. */
  private mayRead (pc: PlainConnection, def: EventDefinition, e: StoredEvent | null): boolean {
    if (pc.removed || !mayReceive(def, pc.user)) return false
    if (def.category !== 'private') return true
    return pc.user !== null && e !== null && e.recipient !== null && e.recipient.startsWith(`${pc.user.name}/`)
  }

  private readableNow (pc: PlainConnection): Set<string> {
    const out = new Set<string>()
    for (const def of this.options.site().events.values()) {
      if (!pc.removed && mayReceive(def, pc.user) && (def.category !== 'private' || pc.user !== null)) out.add(def.name)
    }
    return out
  }

  /** Writes one event; false if it was not written. */
  private send (pc: PlainConnection, out: Outgoing, qos: 0 | 1, retain: boolean): boolean {
    const s = pc.conn
    if (pc.closed || s.destroyed || !s.writable) return false
    const limits = this.options.limits
    if (qos === 0 && pc.blocked && !retain) {
      // [PLAIN-VIEW-7] a connection above its bound gets no live QoS 0 events until it drains (a
      // retained burst waits for it before each page instead)
      this.dropped++
      return false
    }
    if ((qos === 1 || retain) && s.writableLength + pc.waitingBytes > limits.hardLimitBytes) return this.shut(pc, 'overflow')
    if (qos === 1 && (pc.inflight.size >= limits.maxInflight || pc.waiting.length > 0)) {
      // [PLAIN-VIEW-7] the window is full: the event waits (its bytes count against the hard
      // limit); a window that stays full for the slow-connection timeout closes the connection
      pc.waiting.push({ out, retain })
      pc.waitingBytes += out.body.length
      pc.ackTimer ??= setTimeout(() => { this.shut(pc, 'inflight') }, limits.slowTimeoutMs)
      pc.ackTimer.unref()
      return true
    }
    this.write(pc, out, qos, retain)
    return true
  }

  /** A PUBACK came: the waiting QoS 1 events fill the window again. */
  private acked (pc: PlainConnection): void {
    if (pc.ackTimer !== null) {
      clearTimeout(pc.ackTimer)
      pc.ackTimer = null
    }
    while (pc.waiting.length > 0 && pc.inflight.size < this.options.limits.maxInflight && !pc.closed) {
      const w = pc.waiting.shift()!
      pc.waitingBytes -= w.out.body.length
      this.write(pc, w.out, 1, w.retain)
    }
    if (pc.waiting.length > 0 && !pc.closed) {
      pc.ackTimer = setTimeout(() => { this.shut(pc, 'inflight') }, this.options.limits.slowTimeoutMs)
      pc.ackTimer.unref()
    }
  }

  private write (pc: PlainConnection, out: Outgoing, qos: 0 | 1, retain: boolean): void {
    const s = pc.conn
    const limits = this.options.limits
    const body = out.body
    s.cork()
    s.write(publishHeader(out.topic, body.length, qos, retain, qos === 1 ? pc.takeId() : 0))
    s.write(body)
    s.uncork()
    this.sent++
    if (!pc.blocked && s.writableLength > limits.maxQueuedBytes && s.writableNeedDrain) pc.block(limits.slowTimeoutMs, () => { this.shut(pc, 'stuck') })
  }

  private shut (pc: PlainConnection, reason: PlainCloseReason): false {
    if (pc.closed) return false
    const queued = pc.conn.writableLength
    this.closedBy[reason]++
    this.logger.warn({ clientId: pc.client.id, reason, queuedBytes: queued, inflight: pc.inflight.size }, reason === 'inflight'
      ? `closing a plain connection that acknowledged none of its ${pc.inflight.size} QoS 1 events in flight for ${this.options.limits.slowTimeoutMs} ms`
      : reason === 'stuck'
        ? `closing a plain connection that has not read its socket for ${this.options.limits.slowTimeoutMs} ms`
        : 'closing a plain connection whose unsent bytes passed the hard limit')
    this.options.onClose?.(pc.client, reason, queued)
    this.closed(pc.client)
    pc.conn.destroy()
    return false
  }

  /** [PLAIN-VIEW-7] A store read for retained values, at most `maxConcurrentReads` at once across all connections. */
  private async read (query: Parameters<EventStore['read']>[0]): Promise<StoredEvent[]> {
    while (this.readsRunning >= this.options.limits.maxConcurrentReads) {
      await new Promise<void>((resolve) => { this.readWaiters.push(resolve) })
    }
    this.readsRunning++
    try {
      return await this.options.store.read(query)
    } finally {
      this.readsRunning--
      this.readWaiters.shift()?.()
    }
  }

  /** [PLAIN-VIEW-4] Queues the retained values of `sub` (of `events` only, or every replacing event); one burst per filter waits at most. */
  private queueBurst (pc: PlainConnection, sub: PlainSub, events: readonly string[] | null): void {
    const queued = pc.bursts.get(sub.filter)
    if (queued !== undefined && queued.events !== null && events !== null) {
      pc.bursts.set(sub.filter, { sub, events: [...new Set([...queued.events, ...events])] })
    } else {
      pc.bursts.set(sub.filter, { sub, events: queued !== undefined && queued.events === null ? null : events })
    }
    if (pc.bursting) return
    pc.bursting = true
    this.runBursts(pc).catch((err: unknown) => {
      this.logger.debug({ clientId: pc.client.id, err: (err as Error).message }, 'retained values for a plain subscription: read failed')
    }).finally(() => {
      pc.bursting = false
      pc.liveSent.clear()
    })
  }

  private async runBursts (pc: PlainConnection): Promise<void> {
    for (;;) {
      const next = pc.bursts.entries().next()
      if (next.done === true || pc.closed) return
      const [filter, { sub, events }] = next.value
      pc.bursts.delete(filter)
      await this.burst(pc, sub, events)
    }
  }

  /**
   * Sends the last stored instance of each replacing (service, event) `sub` matches, with the retain
   * flag, read a page at a time and written only while the connection keeps up ([PLAIN-VIEW-7]).
   */
  private async burst (pc: PlainConnection, sub: PlainSub, events: readonly string[] | null): Promise<void> {
    const names = events ?? [...this.options.site().events.values()].filter((d) => d.category === 'replacing').map((d) => d.name)
    const eventLevel = sub.levels[3]
    const serviceLevel = sub.levels[4]
    const services = serviceLevel !== undefined && serviceLevel !== '+' && serviceLevel !== '#' && eventLevel !== '#' ? new Set([serviceLevel]) : null
    // QoS 1: a page never fills more than half the in-flight bound, so live events still fit
    const window = Math.max(1, this.options.limits.maxInflight >> 1)
    const pageEvents = sub.qos === 1 ? Math.min(RETAINED_PAGE_EVENTS, window) : RETAINED_PAGE_EVENTS
    for (const name of names) {
      if (eventLevel !== undefined && eventLevel !== '+' && eventLevel !== '#' && eventLevel !== name) continue
      let after = 0
      for (;;) {
        await pc.ready(window)
        if (pc.closed || pc.subs.get(sub.filter) !== sub) return
        const def = this.options.site().events.get(name)
        if (def === undefined || def.category !== 'replacing' || !this.mayRead(pc, def, null)) break
        const page = await this.read({ event: name, after, services, recipient: null, now: this.clock.now(), limit: pageEvents, maxBytes: RETAINED_PAGE_BYTES })
        if (page.length === 0) break
        if (pc.closed || pc.subs.get(sub.filter) !== sub) return
        for (const e of page) {
          after = e.position
          const out = new Outgoing(e)
          if (!filterMatches(sub.levels, out.levels)) continue
          // this instance, or a newer one, went out live meanwhile
          if ((pc.liveSent.get(retainedSlot(e)) ?? 0) >= e.position) continue
          if (!this.mayRead(pc, def, e)) continue
          if (!this.send(pc, out, sub.qos, true) && pc.closed) return
          // the connection took enough for now: read on from here once it drains
          if (pc.blocked || pc.waiting.length > 0) break
        }
      }
    }
  }
}

/**
 * Consumer groups on the client side ([GROUP-*] in docs/protocol.md): this endpoint as a member of a
 * group of its user. The broker keeps the positions (per segment), so nothing is kept locally. Events
 * of one segment are handled one at a time in position order; segments run in parallel. Before a
 * handler runs, its event is marked started at the broker and the mark is committed there
 * ([GROUP-ACK-1]); so a crash costs at most one redelivery per segment held, flagged `redelivered`.
 * Browser-safe: only @herald/protocol.
 */
import { backoffDelay, checkInt, ClosedError, ConfigError, decodeGroupEvents, encodeRequest, ErrorCode, errorFromWire, isValidName, MAX_GROUP_SEGMENTS, RequestError, assertName, type Clock, type Control, type HeraldError, type Logger, type StoredEvent, type TimerHandle } from '@herald/protocol'
import type { EventHandler } from './client-subscription.js'
import { toHeraldEvent, type HeraldEvent } from './herald-event.js'

/** Options of a group subscription: `subscribe(event, { group, ... }, handler)`. */
export interface GroupSubscribeOptions {
  /** [GROUP-JOIN-1] The group's name: members are endpoints of the same user with the same name, event, services and segments. */
  readonly group: string
  /** Only events from these services (part of the group's identity, [GROUP-JOIN-3]). Default: all. */
  readonly services?: readonly string[]
  /** [GROUP-SEG-1] The group's segment count: a power of two, 1 to 256. Default 16. */
  readonly segments?: number
  /** Where a new group starts: `'all'` events held (default) or `'new'` ones. An existing group goes on from its positions. */
  readonly start?: 'all' | 'new'
  /** Most events in flight to this member, split across its segments (at least 1 each). Default: the endpoint's window. */
  readonly window?: number
}

/** A live group subscription. */
export interface GroupSubscription {
  /** `group:<name>`. */
  readonly key: string
  readonly group: string
  readonly event: string
  /** Events handled by this member since subscribe(). */
  readonly delivered: number
  /** Of which were flagged redelivered. */
  readonly redelivered: number
  /** Handler failures retried. */
  readonly retries: number
  /** The segments this member claims now, ascending. */
  readonly segments: readonly number[]
  /** Leaves the group: its segments go to the other members at once ([GROUP-LEAVE-1]). */
  unsubscribe (): Promise<void>
}

/** What the core gives the group members. */
export interface GroupIo {
  send (frame: Uint8Array): void
  online (): boolean
  nextWireId (): number
  readonly clock: Clock
  readonly random: () => number
  readonly logger: Logger
  readonly retry: { readonly initialMs: number, readonly maxMs: number }
  readonly window: number
  handlerError (info: { key: string, event: HeraldEvent, error: unknown, attempt: number, retryInMs: number }): void
  subscriptionError (info: { key: string, error: HeraldError }): void
  report (err: unknown): void
}

interface Queued { readonly event: StoredEvent, readonly ageAtSend: number, readonly arrivedAt: number, readonly redelivered: boolean }

/** One claimed segment: its queue and its handler loop, under one epoch. */
class SegmentRun {
  readonly queue: Queued[] = []
  /** Position of the last event handled under this claim (or the broker's done position when claimed). */
  done = 0
  /** The done position last sent in a gack. */
  ackedDone = 0
  revoked = false
  active = false
  idle: Promise<void> = Promise.resolve()
  /** A started mark waiting for its `committed`. */
  waiting: { readonly position: number, readonly resolve: (ok: boolean) => void } | null = null
  /** Wakes a handler retry's wait early (revoked). */
  wake: (() => void) | null = null
  constructor (readonly segment: number, readonly epoch: number, readonly after: Promise<void>) {}

  revoke (): void {
    this.revoked = true
    this.queue.length = 0
    const w = this.waiting
    this.waiting = null
    w?.resolve(false)
    this.wake?.()
  }
}

class Membership {
  wireId = 0
  closed = false
  settle: { resolve: () => void, reject: (err: HeraldError) => void } | null = null
  readonly runs = new Map<number, SegmentRun>()
  /** Per segment, the idle promise of its last run: a new claim's handlers start after it. */
  readonly tails = new Map<number, Promise<void>>()
  delivered = 0
  redelivered = 0
  retries = 0
  constructor (readonly key: string, readonly group: string, readonly event: string, readonly services: readonly string[] | null, readonly segments: number, readonly start: 'all' | 'new', readonly window: number, readonly handler: EventHandler) {}

  dropRuns (): void {
    for (const run of this.runs.values()) run.revoke()
    this.runs.clear()
  }
}

const OPTION_KEYS = new Set(['group', 'services', 'segments', 'start', 'window'])

export class GroupMembers {
  private readonly byWire = new Map<number, Membership>()
  private readonly byKey = new Map<string, Membership>()
  private readonly resubscribeTimers = new Set<TimerHandle>()
  private closed = false

  constructor (private readonly io: GroupIo) {}

  get size (): number {
    return this.byKey.size
  }

  /** [GROUP-JOIN-1] Joins `options.group`; resolves once the broker accepted the member. */
  async subscribe (event: string, options: GroupSubscribeOptions, handler: EventHandler): Promise<GroupSubscription> {
    if (this.closed) throw new ClosedError('ClientEndpoint is closed')
    for (const k of Object.keys(options)) if (!OPTION_KEYS.has(k)) throw new ConfigError(`subscribe: option "${k}" is not taken by a group subscription (group, services, segments, start, window)`)
    if (!isValidName(event)) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `subscribe: ${JSON.stringify(event)} is not a valid event name`)
    if (typeof handler !== 'function') throw new ConfigError('subscribe: handler must be a function')
    assertName(options.group, 'subscribe: group')
    const services = options.services === undefined ? null : [...new Set(options.services)].sort()
    if (services !== null) for (const s of services) assertName(s, 'subscribe: services[]')
    const segments = options.segments ?? 16
    checkInt('subscribe', 'segments', segments, 1, MAX_GROUP_SEGMENTS)
    if ((segments & (segments - 1)) !== 0) throw new ConfigError(`subscribe: option "segments" must be a power of two from 1 to ${MAX_GROUP_SEGMENTS}, got ${segments}`)
    const start = options.start ?? 'all'
    if (start !== 'all' && start !== 'new') throw new ConfigError(`subscribe: option "start" of a group subscription must be "all" or "new", got ${JSON.stringify(start)}`)
    const window = options.window ?? this.io.window
    checkInt('subscribe', 'window', window, 1, 100_000)
    const key = `group:${options.group}`
    if (this.byKey.has(key)) throw new ConfigError(`subscribe: this endpoint is a member of group "${options.group}" already`)
    const m = new Membership(key, options.group, event, services, segments, start, window, handler)
    this.byKey.set(key, m)
    const settled = new Promise<void>((resolve, reject) => { m.settle = { resolve, reject } })
    if (this.io.online()) this.join(m)
    try {
      await settled
    } catch (err) {
      this.byKey.delete(key)
      throw err
    }
    return this.view(m)
  }

  private view (m: Membership): GroupSubscription {
    return {
      key: m.key,
      group: m.group,
      event: m.event,
      get delivered () { return m.delivered },
      get redelivered () { return m.redelivered },
      get retries () { return m.retries },
      get segments () { return [...m.runs.keys()].sort((a, b) => a - b) },
      unsubscribe: async () => { await this.end(m, true) }
    }
  }

  private async end (m: Membership, sendUnsub: boolean): Promise<void> {
    m.closed = true
    if (m.wireId !== 0) {
      if (sendUnsub && this.io.online()) this.io.send(encodeRequest({ op: 'unsub', sub: m.wireId }))
      this.byWire.delete(m.wireId)
      m.wireId = 0
    }
    this.byKey.delete(m.key)
    const idle = [...m.runs.values()].map((r) => r.idle)
    m.dropRuns()
    await Promise.all([...idle, ...m.tails.values()])
  }

  private join (m: Membership): void {
    if (m.closed || m.wireId !== 0 || !this.io.online()) return
    const id = this.io.nextWireId()
    m.wireId = id
    this.byWire.set(id, m)
    this.io.send(encodeRequest({ op: 'gjoin', sub: id, group: m.group, event: m.event, services: m.services, segments: m.segments, start: m.start, window: m.window }))
  }

  /** The link is up: every membership joins again (the broker gives back the segments still leased to it). */
  online (): void {
    for (const m of this.byKey.values()) this.join(m)
  }

  /** The link is down: claims end here (the broker leases them to this client for its leaseMs). */
  offline (): void {
    this.byWire.clear()
    for (const m of this.byKey.values()) {
      m.wireId = 0
      this.retire(m)
    }
  }

  /** Drops every run, keeping their idle promises so that a later claim of a segment starts after them. */
  private retire (m: Membership): void {
    for (const run of m.runs.values()) m.tails.set(run.segment, run.idle)
    m.dropRuns()
  }

  /** A GROUP_EVENTS frame ([GROUP-FRAME-1]). Frames of a claim no longer held are ignored. */
  onEvents (payload: Uint8Array): void {
    const frame = decodeGroupEvents(payload, (id) => this.byWire.get(id)?.event ?? null)
    if (frame === null) return
    const m = this.byWire.get(frame.sub) as Membership
    const run = m.runs.get(frame.segment)
    if (run === undefined || run.epoch !== frame.epoch || run.revoked) return
    const now = this.io.clock.now()
    for (const e of frame.events) run.queue.push({ event: e, ageAtSend: Math.max(0, frame.brokerNow - e.receivedAt) + e.uploadAge, arrivedAt: now, redelivered: e.position === frame.redelivered })
    this.kick(m, run)
  }

  /** A CONTROL frame: true if it was a group member's. */
  onControl (c: Control): boolean {
    if (!('sub' in c) || c.sub === null) return false
    const m = this.byWire.get(c.sub)
    if (m === undefined) return c.op === 'joined' || c.op === 'assigned' || c.op === 'revoked' || c.op === 'committed'
    switch (c.op) {
      case 'joined': {
        const s = m.settle
        m.settle = null
        s?.resolve()
        return true
      }
      case 'assigned':
        // [GROUP-CTRL-2] each claim starts a run; its handlers wait for the segment's previous run here
        for (const { segment, epoch } of c.claims) {
          const old = m.runs.get(segment)
          if (old !== undefined) {
            m.tails.set(segment, old.idle)
            old.revoke()
          }
          m.runs.set(segment, new SegmentRun(segment, epoch, m.tails.get(segment) ?? Promise.resolve()))
        }
        return true
      case 'revoked':
        // [GROUP-CTRL-3]
        for (const segment of c.segments) {
          const run = m.runs.get(segment)
          if (run === undefined) continue
          m.tails.set(segment, run.idle)
          run.revoke()
          m.runs.delete(segment)
        }
        return true
      case 'committed': {
        // [GROUP-CTRL-4]
        const run = m.runs.get(c.segment)
        if (run === undefined || run.epoch !== c.epoch) return true
        const w = run.waiting
        if (w !== null && c.started >= w.position) {
          run.waiting = null
          w.resolve(true)
        }
        return true
      }
      case 'error': {
        const error = errorFromWire(c.code, c.message)
        this.byWire.delete(m.wireId)
        m.wireId = 0
        this.retire(m)
        if (m.settle !== null) {
          const s = m.settle
          m.settle = null
          m.closed = true
          s.reject(error)
          return true
        }
        if (error.code === ErrorCode.PERSISTENCE_FAILED) {
          const t = this.io.clock.setTimer(() => { this.resubscribeTimers.delete(t); this.join(m) }, this.io.retry.initialMs * 10)
          this.resubscribeTimers.add(t)
          return true
        }
        // [GROUP-ACCESS-1] access withdrawn or the event removed: the membership ends
        m.closed = true
        this.byKey.delete(m.key)
        this.io.subscriptionError({ key: m.key, error })
        return true
      }
      default:
        return false
    }
  }

  private kick (m: Membership, run: SegmentRun): void {
    if (run.active || run.revoked || m.closed) return
    run.active = true
    run.idle = this.loop(m, run).catch((err: unknown) => { this.io.report(err) }).finally(() => {
      run.active = false
      if (!run.revoked && run.queue.length > 0) this.kick(m, run)
    })
  }

  /** [GROUP-ORDER-1] One segment's events, one at a time, in position order. */
  private async loop (m: Membership, run: SegmentRun): Promise<void> {
    await run.after
    while (!run.revoked && !m.closed && run.queue.length > 0) {
      const q = run.queue[0] as Queued
      // [GROUP-ACK-1] the started mark is durable at the broker before the handler runs
      const ok = await this.mark(m, run, q.event.position)
      if (!ok) return
      if (!await this.handle(m, run, q)) return
      run.done = q.event.position
      run.queue.shift()
      m.delivered++
      if (q.redelivered) m.redelivered++
    }
    if (!run.revoked && !m.closed && run.done > run.ackedDone && m.wireId !== 0) {
      run.ackedDone = run.done
      this.io.send(encodeRequest({ op: 'gack', sub: m.wireId, segment: run.segment, epoch: run.epoch, done: run.done, started: run.done }))
    }
  }

  private async mark (m: Membership, run: SegmentRun, position: number): Promise<boolean> {
    if (m.wireId === 0) return false
    const done = run.done
    run.ackedDone = done
    const committed = new Promise<boolean>((resolve) => { run.waiting = { position, resolve } })
    this.io.send(encodeRequest({ op: 'gack', sub: m.wireId, segment: run.segment, epoch: run.epoch, done, started: position }))
    return await committed
  }

  /** Runs the handler until it succeeds; false if the claim ended first (the next owner gets the event, flagged). */
  private async handle (m: Membership, run: SegmentRun, q: Queued): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      const event = toHeraldEvent(q.event, q.ageAtSend + Math.max(0, this.io.clock.now() - q.arrivedAt), q.redelivered)
      try {
        await m.handler(event)
        return true
      } catch (error) {
        if (run.revoked || m.closed) return false
        const retryInMs = backoffDelay(attempt, this.io.retry, this.io.random)
        m.retries++
        this.io.handlerError({ key: m.key, event, error, attempt: attempt + 1, retryInMs })
        await new Promise<void>((resolve) => {
          const t = this.io.clock.setTimer(() => { run.wake = null; resolve() }, retryInMs)
          run.wake = () => { t.cancel(); run.wake = null; resolve() }
        })
        if (run.revoked || m.closed) return false
      }
    }
  }

  async close (): Promise<void> {
    this.closed = true
    for (const t of this.resubscribeTimers) t.cancel()
    this.resubscribeTimers.clear()
    for (const m of [...this.byKey.values()]) {
      const s = m.settle
      m.settle = null
      s?.reject(new ClosedError('ClientEndpoint closed'))
      await this.end(m, false)
    }
  }
}

/**
 * Plain-MQTT ingest ([PLAIN-INGEST-*] in docs/protocol.md): a device with a service's credentials
 * raises an event by publishing to `herald/v1/raise/<event>` (`.../<user>/<clientName>` for private
 * events, `.../k/<key>` after it for a de-duplication key). The publish is judged as an UP frame's
 * event would be ([SVC-REJECT-1]), appended to the event store through the same group commit as
 * the uplink's, and answered (aedes sends the PUBACK when `done()` is called) only after its commit.
 *
 * Identity ([PLAIN-INGEST-3]): every ingest event of a service has the persistence instance `mqtt`
 * and the next seq of that instance, assigned here; so the store keeps one dedup record per service
 * however many connections come and go. A key makes a retry a duplicate ([STORE-DEDUP-2]).
 *
 * Bounds ([PLAIN-INGEST-6]): aedes reads a connection's next packets only after every publish of
 * its last read was answered, and this answers only after the commit; publishes beyond
 * `maxConnectionBytes` (per connection) or `maxPendingBytes` (all plain connections) waiting for a
 * commit are held back (not appended) until earlier ones are committed.
 */
import { isUtf8 } from 'node:buffer'
import type { AedesOptions, Client } from 'aedes'
import { Category, ErrorCode, GUEST_PRINCIPAL, PayloadKind, isValidName, type Clock, type Logger, type ServiceDefinition, type Site, type StoredEvent } from '@herald/protocol'
import type { PlainPrincipal } from '../auth/principal.js'
import type { AppendResult, ArrivingEvent, EventStore } from '../event-store/event-store.js'
import { keyVerdict } from '../uplink/key-verdict.js'
import { DEDUP_KEY_DEFAULTS, isPromise, type MaybePromise } from '../event-store/event-store.js'

type Packet = Parameters<NonNullable<AedesOptions['authorizePublish']>>[1]
type PublishDone = Parameters<NonNullable<AedesOptions['authorizePublish']>>[2]

/** The persistence instance of every ingest event ([PLAIN-INGEST-3]): event ids are `mqtt-<seq>`. */
export const INGEST_INSTANCE = 'mqtt'

/** Topic prefix of ingest ([TOPIC-RAISE-1]). */
const PREFIX = 'herald/v1/raise/'

/** The topic level that introduces a de-duplication key ([PLAIN-INGEST-4]). */
const KEY_LEVEL = 'k'

/** The topic level that introduces the replacing key of a keyed event ([PLAIN-INGEST-7]). */
const RKEY_LEVEL = 'r'

/** Characters of a de-duplication key: one topic level, printable ASCII without `/`, `+`, `#`. */
const KEY_PATTERN = /^[A-Za-z0-9_.:@=-]+$/

/** The defaults of the ingest bounds ([PLAIN-INGEST-6]). */
export const PLAIN_INGEST_DEFAULTS = Object.freeze({
  /** Payload bytes of one connection's publishes waiting for their commit; one publish alone always goes. */
  maxConnectionBytes: 1024 * 1024,
  /** Payload bytes of all plain connections' publishes waiting for their commit; one publish alone always goes. */
  maxPendingBytes: 64 * 1024 * 1024
})

/** Why a publish closed its connection ([PLAIN-INGEST-5]); counted per reason. */
export type IngestRefusal =
  | 'notService' | 'malformedTopic' | 'unknownEvent' | 'notAuthorized' | 'wrongCategory'
  | 'payloadTooLarge' | 'invalidPayload' | 'qos2' | 'storeFailed' | 'keyLimit'

const REFUSAL_CODE: Readonly<Record<IngestRefusal, ErrorCode>> = {
  notService: ErrorCode.NOT_AUTHORIZED,
  malformedTopic: ErrorCode.INVALID_ARGUMENT,
  unknownEvent: ErrorCode.UNKNOWN_EVENT,
  notAuthorized: ErrorCode.NOT_AUTHORIZED,
  wrongCategory: ErrorCode.WRONG_CATEGORY,
  payloadTooLarge: ErrorCode.PAYLOAD_TOO_LARGE,
  invalidPayload: ErrorCode.INVALID_ARGUMENT,
  qos2: ErrorCode.INVALID_ARGUMENT,
  storeFailed: ErrorCode.PERSISTENCE_FAILED,
  keyLimit: ErrorCode.KEY_LIMIT
}

/** Counters of ingest (broker stats, /metrics). */
export interface IngestStats {
  /** Publishes accepted and appended to the store. */
  accepted: number
  /** Of those, committed: stored, or handled without storing (below). */
  stored: number
  /** Retries of a key already handled ([STORE-DEDUP-2]): acknowledged, not stored again. */
  duplicates: number
  /** Handled but not stored: a null over a null ([STORE-REPLACE-2]) (ingest events never arrive expired). */
  nullsDropped: number
  /** Publishes that closed their connection, by reason. */
  refused: Record<IngestRefusal, number>
  /** Payload bytes waiting for a commit now (appended or held back). */
  waitingBytes: number
  /** Publishes held back now by a bound ([PLAIN-INGEST-6]). */
  held: number
}

/** What ingest needs from the broker around it. */
export interface PlainIngestContext {
  readonly site: Site
  readonly store: EventStore
  readonly clock: Clock
  readonly logger: Logger
  /** Newly stored events, after their commit, in position order (delivery and the view). */
  onStored (events: readonly StoredEvent[]): void
  readonly maxConnectionBytes?: number
  readonly maxPendingBytes?: number
}

interface Publish {
  readonly client: Client
  readonly conn: ConnState
  readonly service: ServiceDefinition
  readonly event: Omit<ArrivingEvent, 'seq'>
  readonly bytes: number
  readonly done: PublishDone
}

interface ConnState {
  /** Bytes of this connection's publishes appended to the store and not committed yet. */
  inStore: number
  /** Publishes held back by a bound, in arrival order. */
  readonly held: Publish[]
}

/** A recipient client key `<user>/<clientName>` (the user may be the guest principal). */
function isRecipientKey (user: string, clientName: string): boolean {
  return (user === GUEST_PRINCIPAL || isValidName(user)) && isValidName(clientName)
}

/** The first byte of a JSON text after whitespace: `{ [ " - 0-9 t f n`. */
function mayBeJson (payload: Buffer): boolean {
  for (let i = 0; i < payload.length; i++) {
    const c = payload[i]!
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) continue
    return c === 0x7b || c === 0x5b || c === 0x22 || c === 0x2d || (c >= 0x30 && c <= 0x39) || c === 0x74 || c === 0x66 || c === 0x6e
  }
  return false
}

/** [PLAIN-INGEST-2] a payload that is UTF-8 JSON text is JSON; anything else is bytes. */
function payloadKindOf (payload: Buffer): PayloadKind {
  if (!mayBeJson(payload) || !isUtf8(payload)) return PayloadKind.bytes
  try {
    JSON.parse(payload.toString('utf8'))
    return PayloadKind.json
  } catch {
    return PayloadKind.bytes
  }
}

class Refused {
  constructor (readonly reason: IngestRefusal, readonly message: string) {}
}

export class PlainIngest {
  readonly stats: IngestStats = {
    accepted: 0,
    stored: 0,
    duplicates: 0,
    nullsDropped: 0,
    refused: { notService: 0, malformedTopic: 0, unknownEvent: 0, notAuthorized: 0, wrongCategory: 0, payloadTooLarge: 0, invalidPayload: 0, qos2: 0, storeFailed: 0, keyLimit: 0 },
    waitingBytes: 0,
    held: 0
  }

  /** Events stored per event name (merged into the broker's per-event stats). */
  readonly storedByEvent = new Map<string, number>()
  /** Publishes refused per event name in the site and error code (merged into the per-event stats). */
  readonly refusedByEvent = new Map<string, Map<string, number>>()

  readonly #ctx: PlainIngestContext
  /** The site publishes are judged against; setSite() swaps it ([SITE-RELOAD-4]). */
  #site: Site
  readonly #maxConnectionBytes: number
  readonly #maxPendingBytes: number
  readonly #conns = new WeakMap<Client, ConnState>()
  /** Connections with publishes held back, oldest first. */
  readonly #blocked = new Set<ConnState>()
  /** Per service: the last seq assigned in the ingest instance. */
  readonly #seqs = new Map<string, MaybePromise<number>>()
  /** Bytes appended to the store and not committed yet, all connections. */
  #inStore = 0
  readonly #lastLogged = new Map<IngestRefusal, { at: number, skipped: number }>()

  constructor (ctx: PlainIngestContext) {
    this.#ctx = ctx
    this.#site = ctx.site
    this.#maxConnectionBytes = ctx.maxConnectionBytes ?? PLAIN_INGEST_DEFAULTS.maxConnectionBytes
    this.#maxPendingBytes = ctx.maxPendingBytes ?? PLAIN_INGEST_DEFAULTS.maxPendingBytes
  }

  /** aedes' authorizePublish for a plain connection: done() sends the PUBACK (QoS 1), done(err) closes the connection. */
  authorizePublish (client: Client, principal: PlainPrincipal, packet: Packet, done: PublishDone): void {
    const judged = this.#judge(principal, packet)
    if (judged instanceof Refused) {
      this.#refuse(client, principal, packet.topic, judged)
      done(new Error(judged.message))
      return
    }
    let conn = this.#conns.get(client)
    if (conn === undefined) this.#conns.set(client, conn = { inStore: 0, held: [] })
    const p: Publish = { client, conn, service: principal.service!, event: judged, bytes: judged.payload.byteLength, done }
    this.stats.waitingBytes += p.bytes
    if (conn.held.length > 0 || !this.#fits(conn, p.bytes)) {
      // [PLAIN-INGEST-6] held back until earlier publishes are committed; aedes reads no more of
      // this connection until this one is answered
      conn.held.push(p)
      this.stats.held++
      this.#blocked.add(conn)
      return
    }
    this.#submit(p)
  }

  /** Judges publishes against `site` from now on (a site reload, [SITE-RELOAD-4]). */
  setSite (site: Site): void {
    this.#site = site
  }

  /** A plain connection closed: what it had held back is dropped (never acknowledged). */
  closed (client: Client): void {
    const conn = this.#conns.get(client)
    if (conn === undefined) return
    for (const p of conn.held) this.stats.waitingBytes -= p.bytes
    this.stats.held -= conn.held.length
    conn.held.length = 0
    this.#blocked.delete(conn)
    this.#conns.delete(client)
  }

  #fits (conn: ConnState, bytes: number): boolean {
    return (conn.inStore === 0 || conn.inStore + bytes <= this.#maxConnectionBytes) &&
      (this.#inStore === 0 || this.#inStore + bytes <= this.#maxPendingBytes)
  }

  /** Judges a publish ([PLAIN-INGEST-1], [PLAIN-INGEST-2], [PLAIN-INGEST-5]): the event to append, or why not. */
  #judge (principal: PlainPrincipal, packet: Packet): Omit<ArrivingEvent, 'seq'> | Refused {
    const service = principal.service
    if (service === null) return new Refused('notService', 'only a service\'s credentials may publish (this login is read-only)')
    if (packet.qos === 2) return new Refused('qos2', 'QoS 2 is not supported: publish at QoS 1')
    const topic = packet.topic
    if (!topic.startsWith(PREFIX)) return new Refused('malformedTopic', `topic ${JSON.stringify(topic)} is not herald/v1/raise/<event>`)
    const levels = topic.slice(PREFIX.length).split('/')
    const name = levels[0]!
    const def = this.#site.events.get(name)
    if (def === undefined) return new Refused(isValidName(name) ? 'unknownEvent' : 'malformedTopic', `event ${JSON.stringify(name)} is not defined in the site`)
    if (!service.events.has(name)) return new Refused('notAuthorized', `service "${service.id}" may not raise "${name}"`)
    let rest = levels.slice(1)
    let recipient: string | null = null
    if (def.category === Category.private) {
      // [PLAIN-INGEST-1] a private event names its recipient client in two levels
      if (rest.length < 2) return new Refused('wrongCategory', `"${name}" is private: publish to herald/v1/raise/${name}/<user>/<clientName>`)
      if (!isRecipientKey(rest[0]!, rest[1]!)) return new Refused('malformedTopic', `recipient ${JSON.stringify(`${rest[0]}/${rest[1]}`)} is not a client key <user>/<clientName>`)
      recipient = `${rest[0]}/${rest[1]}`
      rest = rest.slice(2)
    }
    let rkey: string | undefined
    if (def.key !== undefined && rest.length >= 2 && rest[0] === RKEY_LEVEL) {
      // [PLAIN-INGEST-7] herald/v1/raise/<event>/r/<key>: the replacing key of a keyed event
      rkey = rest[1]!
      if (!KEY_PATTERN.test(rkey)) return new Refused('malformedTopic', `replacing key ${JSON.stringify(rkey)} is not 1 to 128 characters of A-Z a-z 0-9 _ . : @ = -`)
      rest = rest.slice(2)
    }
    let key: string | undefined
    if (rest.length === 2 && rest[0] === KEY_LEVEL) {
      key = rest[1]!
      if (key.length > DEDUP_KEY_DEFAULTS.maxKeyLength || !KEY_PATTERN.test(key)) {
        return new Refused('malformedTopic', `de-duplication key ${JSON.stringify(key)} is not 1 to ${DEDUP_KEY_DEFAULTS.maxKeyLength} characters of A-Z a-z 0-9 _ . : @ = -`)
      }
    } else if (rest.length === 2 && def.category !== Category.private) {
      return new Refused('wrongCategory', `"${name}" is ${def.category}: it has no recipient level`)
    } else if (rest.length > 0) {
      return new Refused('malformedTopic', `topic ${JSON.stringify(topic)} is not herald/v1/raise/<event>[/<user>/<clientName>][/r/<replacing key>][/k/<key>]`)
    }
    const payload = packet.payload as Buffer
    if (payload.byteLength > def.maxPayloadBytes) return new Refused('payloadTooLarge', `payload of ${payload.byteLength} bytes is over the limit of ${def.maxPayloadBytes} for "${name}"`)
    const isNull = payload.byteLength === 0
    // [PLAIN-INGEST-2] an empty payload is a null instance, which only replacing events have
    if (isNull && def.category !== Category.replacing) return new Refused('invalidPayload', `an empty payload is a null instance, and only replacing events have one; "${name}" is ${def.category}`)
    const payloadKind = isNull ? PayloadKind.none : payloadKindOf(payload)
    if (def.key !== undefined) {
      // [PLAIN-INGEST-7] [SITE-KEY-1] the key from the topic, or from the payload's field (parsed for keyed events only)
      let value: unknown
      if (def.key.kind === 'field' && payloadKind === PayloadKind.json) value = JSON.parse(payload.toString('utf8'))
      const verdict = keyVerdict(def.key, { name, seq: 0, isNull, ...(rkey !== undefined ? { key: rkey } : {}) }, value)
      if (Array.isArray(verdict)) return new Refused('invalidPayload', verdict[1])
      if (typeof verdict === 'string') rkey = verdict
    }
    return {
      name,
      category: def.category,
      raisedAt: this.#ctx.clock.now(),
      isNull,
      recipient,
      payloadKind,
      payload,
      ...(key !== undefined ? { dedupKey: key } : {}),
      ...(rkey !== undefined ? { key: rkey } : {})
    }
  }

  #submit (p: Publish): void {
    const { conn, service } = p
    conn.inStore += p.bytes
    this.#inStore += p.bytes
    this.stats.accepted++
    let appended: Promise<AppendResult>
    try {
      // [PLAIN-INGEST-3] the next seq of the service's ingest instance; a failed commit leaves a gap, never a reuse
      const store = this.#ctx.store
      const known = store.assignsSeqs === true ? null : this.#seqs.get(service.id) ?? store.lastSeq(service.id, INGEST_INSTANCE)
      if (known === null) {
        // [CLUSTER-INGEST-1] several brokers number this instance: the shared store does it in its transaction
        appended = store.append({ serviceId: service.id, instance: INGEST_INSTANCE, events: [{ ...p.event, seq: 1 }], handledUpTo: 1, receivedAt: p.event.raisedAt, assignSeqs: true })
      } else if (isPromise(known)) {
        // [PG-ASYNC-1] a shared store reads the record first; publishes of the service meanwhile
        // chain behind this one (#seqs holds the promise of the seq they continue from)
        const next = known.then((last) => last + 1)
        this.#seqs.set(service.id, next)
        next.catch(() => { if (this.#seqs.get(service.id) === next) this.#seqs.delete(service.id) })
        appended = next.then(async (seq) => await this.#ctx.store.append({ serviceId: service.id, instance: INGEST_INSTANCE, events: [{ ...p.event, seq }], handledUpTo: seq, receivedAt: p.event.raisedAt }))
      } else {
        const seq = known + 1
        this.#seqs.set(service.id, seq)
        appended = this.#ctx.store.append({ serviceId: service.id, instance: INGEST_INSTANCE, events: [{ ...p.event, seq }], handledUpTo: seq, receivedAt: p.event.raisedAt })
      }
    } catch (err) {
      appended = Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    appended.then((result) => {
      this.#release(p)
      if (result.refused.length > 0) {
        // [STORE-KEY-3] a new key past maxKeys: handled, not stored; the publish is refused like any other
        const r = result.refused[0]!
        this.#refuse(p.client, null, `${PREFIX}${p.event.name}`, new Refused('keyLimit', r.message), service.id)
        p.done(new Error(r.message))
        this.#pump()
        return
      }
      this.stats.stored += result.stored.length
      this.stats.duplicates += result.duplicates
      this.stats.nullsDropped += result.nullsDropped
      for (const e of result.stored) this.storedByEvent.set(e.name, (this.storedByEvent.get(e.name) ?? 0) + 1)
      if (result.stored.length > 0) this.#ctx.onStored(result.stored)
      // [PLAIN-INGEST-1] committed and fsync'd: aedes sends the PUBACK now
      p.done(null)
      this.#pump()
    }, (err: unknown) => {
      // nothing of it is stored: the connection is closed, the publisher retries
      this.#release(p)
      this.#refuse(p.client, null, '', new Refused('storeFailed', `the event store failed: ${(err as Error).message}`), service.id)
      p.done(new Error('the event store failed'))
      this.#pump()
    })
  }

  #release (p: Publish): void {
    p.conn.inStore -= p.bytes
    this.#inStore -= p.bytes
    this.stats.waitingBytes -= p.bytes
  }

  /** Submits held-back publishes that fit now, oldest connection first. */
  #pump (): void {
    for (const conn of this.#blocked) {
      while (conn.held.length > 0 && this.#fits(conn, conn.held[0]!.bytes)) {
        const p = conn.held.shift()!
        this.stats.held--
        if (p.client.closed) {
          this.stats.waitingBytes -= p.bytes
          continue
        }
        this.#submit(p)
      }
      if (conn.held.length > 0) {
        if (this.#inStore >= this.#maxPendingBytes) return
        continue
      }
      this.#blocked.delete(conn)
    }
  }

  /** Counts a refusal and logs it, at most one line per reason per second ([PLAIN-INGEST-5]). */
  #refuse (client: Client, principal: PlainPrincipal | null, topic: string, r: Refused, serviceId = principal?.service?.id): void {
    this.stats.refused[r.reason]++
    const name = topic.startsWith(PREFIX) ? topic.slice(PREFIX.length).split('/')[0]! : ''
    if (this.#site.events.has(name)) {
      let byCode = this.refusedByEvent.get(name)
      if (byCode === undefined) this.refusedByEvent.set(name, byCode = new Map<string, number>())
      const code = REFUSAL_CODE[r.reason]
      byCode.set(code, (byCode.get(code) ?? 0) + 1)
    }
    const now = this.#ctx.clock.now()
    const l = this.#lastLogged.get(r.reason)
    if (l !== undefined && now - l.at < 1000) {
      l.skipped++
      return
    }
    const who = serviceId !== undefined ? { service: serviceId } : { user: principal?.user?.name ?? null }
    this.#ctx.logger.warn({
      reason: r.reason, code: REFUSAL_CODE[r.reason], ...who, clientId: client.id, ...(topic !== '' ? { topic } : {}),
      ...(l !== undefined && l.skipped > 0 ? { alsoRefusedSinceLastLine: l.skipped } : {})
    }, `plain MQTT publish refused, closing the connection: ${r.message}`)
    this.#lastLogged.set(r.reason, { at: now, skipped: 0 })
  }
}

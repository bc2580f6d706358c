/**
 * The Herald broker core: aedes inside, policy as hooks, no sockets ([CONN-*] in docs/protocol.md).
 * Connections are handed in as duplex streams by listeners (listeners/tcp-listener.ts).
 */
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Aedes, type Client } from 'aedes'
import { AuthError, ConfigError, ErrorCode, checkInt, clientMessageTopic, clientRequestTopic, isAdmin, serviceAckTopic, serviceUpTopic, silentLogger, systemClock, withDefaults, type Clock, type Logger, type Site, type StoredEvent } from '@herald/protocol'
import { ConnectionAdmission, type AdmissionRefusal, type Admitted } from './auth/connection-admission.js'
import { LoginThrottle, addressKey, type LoginStats } from './auth/login-throttle.js'
import { authenticate, type Principal } from './auth/principal.js'
import { ConnectionWriter } from './delivery/connection-writer.js'
import { Delivery, type ClientSession, type SessionSummary, type SubscriptionLag } from './delivery/delivery.js'
import { GROUP_DEFAULTS } from './groups/groups.js'
import type { EventCounters, EventStore } from './event-store/event-store.js'
import { DropReport } from './drop-report.js'
import { EventTail, type TailEntry, type TailFilter } from './dashboard/event-tail.js'
import { PacketSizeGuard } from './listeners/packet-size-guard.js'
import { guardOutgoingAcks, type OutgoingPersistence } from './outgoing-ack-guard.js'
import { PLAIN_INGEST_DEFAULTS, PlainIngest, type IngestStats } from './plain/plain-ingest.js'
import { PlainView, type PlainViewStats } from './plain/plain-view.js'
import { Uplink, type UplinkStats } from './uplink/uplink.js'
import { accessGrew, diffSites, sameSecret, siteChangeRefused, type SiteChange, type SiteChangeReport } from './site/site-change.js'

/** Broker options; every limit has a default in BROKER_DEFAULTS. */
export interface BrokerOptions {
  /** The validated site structure (loadSite()). */
  readonly site: Site
  /** Where events are stored; the broker closes it on close(). */
  readonly store: EventStore
  /** Default: the system clock. */
  readonly clock?: Clock
  /** Default: silent. */
  readonly logger?: Logger
  /** Most simultaneous connections. Default 10,000. */
  readonly maxConnections?: number
  /** Largest MQTT packet accepted, in bytes. Default 18 MiB (the largest frame, 17 MiB, plus headers). */
  readonly maxPacketBytes?: number
  /** Largest in-flight window a client subscription may ask for. Default 10,000 events. */
  readonly maxWindow?: number
  /** Most events in one EVENTS frame. Default 500. */
  readonly maxEventsPerFrame?: number
  /** Target size of one EVENTS frame in bytes (a larger single event goes alone). Default 1 MiB. */
  readonly maxFrameBytes?: number
  /** Most payload bytes in flight (sent, not acknowledged) per subscription. Default 16 MiB. */
  readonly maxInflightBytes?: number
  /** Most subscriptions on one client connection. Default 1,000. */
  readonly maxSubscriptions?: number
  /**
   * Most payload bytes in flight (sent, not acknowledged) per client connection, across all its
   * subscriptions ([CLI-BACKPRESSURE-1]). Default 32 MiB.
   */
  readonly maxConnectionInflightBytes?: number
  /**
   * Most bytes waiting unsent in a connection's socket buffer: above it the broker writes no more
   * events to that connection (nor reads them for it) until the socket drains ([CLI-BACKPRESSURE-1]).
   * Default 2 MiB.
   */
  readonly maxConnectionQueuedBytes?: number
  /** A connection above `maxConnectionQueuedBytes` for this long is closed, in ms. Default 30,000. */
  readonly slowConnectionTimeoutMs?: number
  /** Most subscriptions on one guest connection ([CLI-GUEST-1]). Default 10. */
  readonly guestMaxSubscriptions?: number
  /** Largest in-flight window a guest subscription may ask for ([CLI-GUEST-1]). Default 100 events. */
  readonly guestMaxWindow?: number
  /** Most payload bytes in flight per guest connection, across its subscriptions ([CLI-GUEST-1]). Default 256 KiB. */
  readonly guestMaxConnectionInflightBytes?: number
  /** Most event store reads for delivery under way at once, each of about one frame; as many again for the plain view's retained values ([PLAIN-VIEW-7]). Default 16. */
  readonly maxConcurrentReads?: number
  /** How often expired events are purged, in ms. Default 60,000. */
  readonly purgeIntervalMs?: number
  /** How often events the store dropped (pushed out, expired, ...) are logged, in ms, summed per event name ([STORE-COUNT-1]). Default 10,000. */
  readonly dropLogIntervalMs?: number
  // connections and logins ([CONN-LIMIT-3..5], [CONN-IDLE-1], [CONN-IDLE-2], [AUTH-THROTTLE-1..4])
  /** Most simultaneous connections from one source address (IPv6: one /64). Default 1,000. */
  readonly maxConnectionsPerAddress?: number
  /** Most connections from one source address not yet logged in (before CONNECT, or with a login in progress). Default 100. */
  readonly maxPendingConnectionsPerAddress?: number
  /** Most simultaneous connections of one user (all its client names). Default 100. */
  readonly maxConnectionsPerUser?: number
  /** Most simultaneous guest connections. Default 1,000. */
  readonly maxGuestConnections?: number
  /** Most simultaneous guest connections from one source address. Default 10. */
  readonly maxGuestConnectionsPerAddress?: number
  /** Largest MQTT keepalive honoured, in s; a keepalive of 0 or more counts as this. Default 300. */
  readonly maxKeepaliveSec?: number
  /** How long a new connection may take to send CONNECT, in ms. Default 10,000. */
  readonly connectTimeoutMs?: number
  /** Failed logins a source address may have outstanding before it is refused unchecked. Default 10. */
  readonly loginFailuresPerAddress?: number
  /** Failed logins a user name or service id may have outstanding (from untrusted addresses). Default 20. */
  readonly loginFailuresPerName?: number
  /** One failed login is forgiven after this many ms. Default 30,000. */
  readonly loginFailureDecayMs?: number
  /** Most secret checks (scrypt) at once. Default 2. */
  readonly maxConcurrentLoginChecks?: number
  /** Most secret checks waiting for a slot. Default 64. */
  readonly maxQueuedLoginChecks?: number
  /** Stored events kept for the dashboard's live tail ([OPS-DASH-5]). Default 500. */
  readonly tailEvents?: number
  /** Payload bytes of each tail event kept as its preview. Default 256. */
  readonly tailPreviewBytes?: number
  /**
   * Most payload bytes of one plain MQTT connection's publishes waiting for their commit; more wait
   * unread ([PLAIN-INGEST-6]). One publish alone always goes. Default 1 MiB.
   */
  readonly maxIngestConnectionBytes?: number
  /** Most payload bytes of all plain MQTT publishes waiting for their commit ([PLAIN-INGEST-6]). Default 64 MiB. */
  readonly maxIngestPendingBytes?: number
  // the plain-MQTT view ([PLAIN-VIEW-7])
  /** Most subscriptions (topic filters) on one plain MQTT connection; more get SUBACK 0x80. Default 100. */
  readonly plainMaxSubscriptions?: number
  /**
   * Most bytes waiting unsent for a plain MQTT connection: above it, live QoS 0 events to it are
   * dropped (counted) and its retained values wait; closed when above it for `slowConnectionTimeoutMs`,
   * or at once past it plus `maxPacketBytes`. Default 1 MiB.
   */
  readonly plainMaxQueuedBytes?: number
  /** Most QoS 1 events sent to one plain MQTT connection and not acknowledged; more wait (within the hard limit of `plainMaxQueuedBytes`), and a full window without a PUBACK for `slowConnectionTimeoutMs` closes it. Default 1,000 (at most 65,535). */
  readonly plainMaxInflight?: number
  // consumer groups ([GROUP-*])
  /** [GROUP-LIMIT-1] Most consumer groups per user, in memory or stored. Default 100. */
  readonly maxGroupsPerUser?: number
  /** [GROUP-LIMIT-1] Most live members of one consumer group. Default 64. */
  readonly maxGroupMembers?: number
  /** [GROUP-LEASE-1] How long the segments of a member whose connection closed wait for it, ms. Default 10,000. */
  readonly groupLeaseMs?: number
  /** [GROUP-MOVE-1] Longest wait for a segment's owner to finish what it was sent before the segment moves, ms. Default 30,000. */
  readonly groupRevokeTimeoutMs?: number
  /** [GROUP-FORGET-1] A stored group without members for this long is deleted when its user makes a new one, ms. Default 7 days. */
  readonly groupIdleMs?: number
}

/** How an admin login ended ([OPS-DASH-2]): `notAdmin` only after the right password. */
export type AdminCheck =
  | { readonly ok: true, readonly user: string }
  | { readonly ok: false, readonly reason: 'refused' | 'notAdmin' | 'throttled' | 'busy', readonly delayMs: number }

/** Who is connected now, for the dashboard: service ids, and client sessions with their subscriptions. */
export interface ConnectedEndpoints {
  readonly services: readonly string[]
  readonly clients: readonly SessionSummary[]
  /** More client sessions than were listed. */
  readonly clientsLeftOut: number
}

/** The defaults of every BrokerOptions limit. */
export const BROKER_DEFAULTS = Object.freeze({
  maxConnections: 10_000,
  maxPacketBytes: 18 * 1024 * 1024,
  maxWindow: 10_000,
  maxEventsPerFrame: 500,
  maxFrameBytes: 1024 * 1024,
  maxSubscriptions: 1000,
  maxInflightBytes: 16 * 1024 * 1024,
  purgeIntervalMs: 60_000,
  dropLogIntervalMs: 10_000,
  maxConnectionsPerAddress: 1000,
  maxPendingConnectionsPerAddress: 100,
  maxConnectionsPerUser: 100,
  maxGuestConnections: 1000,
  maxGuestConnectionsPerAddress: 10,
  maxKeepaliveSec: 300,
  connectTimeoutMs: 10_000,
  loginFailuresPerAddress: 10,
  loginFailuresPerName: 20,
  loginFailureDecayMs: 30_000,
  maxConcurrentLoginChecks: 2,
  maxQueuedLoginChecks: 64,
  maxConnectionInflightBytes: 32 * 1024 * 1024,
  maxConnectionQueuedBytes: 2 * 1024 * 1024,
  slowConnectionTimeoutMs: 30_000,
  guestMaxSubscriptions: 10,
  guestMaxWindow: 100,
  guestMaxConnectionInflightBytes: 256 * 1024,
  maxConcurrentReads: 16,
  tailEvents: 500,
  tailPreviewBytes: 256,
  maxIngestConnectionBytes: PLAIN_INGEST_DEFAULTS.maxConnectionBytes,
  maxIngestPendingBytes: PLAIN_INGEST_DEFAULTS.maxPendingBytes,
  plainMaxSubscriptions: 100,
  plainMaxQueuedBytes: 1024 * 1024,
  plainMaxInflight: 1000,
  maxGroupsPerUser: GROUP_DEFAULTS.maxGroupsPerUser,
  maxGroupMembers: GROUP_DEFAULTS.maxGroupMembers,
  groupLeaseMs: GROUP_DEFAULTS.leaseMs,
  groupRevokeTimeoutMs: GROUP_DEFAULTS.revokeTimeoutMs,
  groupIdleMs: GROUP_DEFAULTS.groupIdleMs
})

/** Why connections were refused or closed by the broker's limits ([CONN-LIMIT-*], [AUTH-THROTTLE-*]). */
export type ConnectionRefusal = AdmissionRefusal | 'clientIdInUse' | 'throttled' | 'busy' | 'will' | 'persistentSession' | 'retain' | 'connectTimeout' | 'idle'

/** Counters a broker exposes. */
export interface BrokerStats {
  readonly connections: number
  readonly clientSessions: number
  readonly storedEvents: number
  readonly head: number
  readonly uplink: Readonly<UplinkStats>
  readonly delivered: number
  /** Per event name: what the store dropped since it was opened ([STORE-COUNT-1]); names with nothing dropped may be missing. */
  readonly dropped: Readonly<Record<string, Readonly<EventCounters>>>
  /** Secret checks and their outcomes, and logins refused unchecked. */
  readonly logins: Readonly<LoginStats>
  /** Connections refused or closed, by reason. */
  readonly connectionsRefused: Readonly<Record<ConnectionRefusal, number>>
  /** Connections closed because they stayed above `maxConnectionQueuedBytes` too long, or far above it. */
  readonly slowConnectionsClosed: number
  /** Connections above `maxConnectionQueuedBytes` now, waiting for their socket to drain. */
  readonly blockedConnections: number
  /** Logged-in connections now by kind (`plain`: plain MQTT clients, [PLAIN-LOGIN-1]); `pending` are not logged in yet. */
  readonly connectionsByKind: Readonly<{ service: number, client: number, guest: number, plain: number, pending: number }>
  /**
   * Per event name since the broker started: events stored, sent to clients, and refused by error
   * code ([SVC-REJECT-1]; names not in the site count under "(unknown)"). Names with nothing yet may be missing.
   */
  readonly perEvent: Readonly<Record<string, Readonly<{ stored: number, delivered: number, refused: Readonly<Record<string, number>>, gaps: number, gapMissed: number }>>>
  /** Events stored now per event name, if the store tells. */
  readonly storedByEvent: Readonly<Record<string, number>>
  /** [STORE-KEY-3] Keys stored now per keyed event name, if the store tells. */
  readonly keysByEvent?: Readonly<Record<string, number>>
  /** Per event name with subscriptions: their count and lag in positions (Delivery.lag). */
  readonly lag: Readonly<Record<string, Readonly<SubscriptionLag>>>
  /** Plain MQTT ingest ([PLAIN-INGEST-*]): publishes accepted, stored, duplicates, refused by reason. */
  readonly ingest: Readonly<IngestStats>
  /** The plain-MQTT view: subscribers, events sent and dropped, connections it closed ([PLAIN-VIEW-7]). */
  readonly plainView: Readonly<PlainViewStats>
}

/** A running broker. */
export interface Broker {
  /** Serves one connection (a TCP socket, a WebSocket stream, ...). */
  handle (stream: Duplex): void
  stats (): BrokerStats
  /** Messages in aedes' retained store: none while [CONN-RETAIN-1] holds (for tests and monitoring). */
  retainedCount (): Promise<number>
  readonly store: EventStore
  /**
   * The site in force: the one given to createBroker, or the last one reloadSite() applied. A store
   * whose limits follow reloads reads its event definitions here ([SITE-RELOAD-6]).
   */
  readonly site: Site
  /**
   * Applies a new, validated site to the running broker ([SITE-RELOAD-1..7]), synchronously, or
   * throws a ConfigError (SITE_INVALID) naming each change stored data cannot follow, changing
   * nothing. New logins, raised events and subscriptions use it at once; connections of removed
   * entries, of entries whose secret changed and of guests when guests are turned off are closed;
   * live subscriptions are checked again. Returns what changed.
   */
  reloadSite (next: Site): SiteChangeReport
  /**
   * An admin login for the dashboard ([OPS-DASH-2]): the user's password checked like an MQTT login,
   * through the same login throttle ([AUTH-THROTTLE-1..4]) and with the same cost for an unknown
   * name as for a wrong password; then whether a role of the user is an admin role ([SITE-ADMIN-1]).
   * A refusal carries the delay to wait before answering it.
   */
  checkAdmin (name: string, password: string, address: string | undefined): Promise<AdminCheck>
  /** Whether `name` is a user of the site with an admin role now ([SITE-ADMIN-1]): a dashboard session ends when not. */
  isAdminUser (name: string): boolean
  /** The last stored events (the dashboard's tail), newest first ([OPS-DASH-5]). */
  recentEvents (filter?: TailFilter, limit?: number): TailEntry[]
  /** Connected services and client sessions, at most `maxClients` of these. */
  connected (maxClients: number): ConnectedEndpoints
  /** Closes every connection, stops timers and closes the store. */
  close (): Promise<void>
}

interface AuthCodeError extends Error { returnCode: number }

/** A connection refused by a limit, with the CONNACK code to send (2 identifier rejected, 3 server unavailable, 5 not authorized). */
class Refusal extends Error {
  constructor (readonly reason: ConnectionRefusal, readonly returnCode: 2 | 3 | 5, message: string) { super(message) }
}

function connectError (err: unknown): AuthCodeError {
  const e = new Error(err instanceof Error ? err.message : String(err)) as AuthCodeError
  // MQTT 3.1.1 CONNACK codes: 4 bad user name or password, 5 not authorized, 3 server unavailable
  e.returnCode = err instanceof Refusal ? err.returnCode : err instanceof AuthError ? (err.code === ErrorCode.BAD_CREDENTIALS ? 4 : 5) : 3
  return e
}

/** Whether two principals are the same login (the same user, service, or both guests). */
function sameLogin (a: Principal | undefined, b: Principal): boolean {
  if (a === undefined || a.kind !== b.kind) return false
  if (a.kind === 'service') return a.service.id === (b as typeof a).service.id
  return a.user?.name === (b as typeof a).user?.name && (a.kind === 'client' || a.service?.id === (b as typeof a).service?.id)
}

type PerEvent = { stored: number, delivered: number, refused: Record<string, number>, gaps: number, gapMissed: number }

function perEventStats (uplink: Uplink, delivery: Delivery, ingest: PlainIngest): Record<string, PerEvent> {
  const out: Record<string, PerEvent> = {}
  const of = (name: string): PerEvent => (out[name] ??= { stored: 0, delivered: 0, refused: {}, gaps: 0, gapMissed: 0 })
  for (const [name, n] of uplink.storedByEvent) of(name).stored = n
  for (const [name, n] of delivery.deliveredByEvent) of(name).delivered = n
  // [CLI-GAP-4] subscriptions that missed removed events, and how many they missed
  for (const [name, g] of delivery.gapsByEvent) Object.assign(of(name), { gaps: g.gaps, gapMissed: g.missed })
  for (const [name, byCode] of uplink.refusedByEvent) of(name).refused = Object.fromEntries(byCode)
  // [PLAIN-INGEST-*] events raised over plain MQTT count with the uplink's
  for (const [name, n] of ingest.storedByEvent) of(name).stored += n
  for (const [name, byCode] of ingest.refusedByEvent) {
    const r = of(name).refused
    for (const [code, n] of byCode) r[code] = (r[code] ?? 0) + n
  }
  return out
}

/** Creates a broker around an event store. */
export async function createBroker (options: BrokerOptions): Promise<Broker> {
  if (options?.site === undefined || options.store === undefined) throw new ConfigError('createBroker: options "site" and "store" are required')
  const { store } = options
  // the site in force; reloadSite() replaces it ([SITE-RELOAD-1])
  let site: Site = options.site
  const limits = withDefaults('createBroker', BROKER_DEFAULTS, {
    maxConnections: options.maxConnections,
    maxPacketBytes: options.maxPacketBytes,
    maxWindow: options.maxWindow,
    maxEventsPerFrame: options.maxEventsPerFrame,
    maxFrameBytes: options.maxFrameBytes,
    maxSubscriptions: options.maxSubscriptions,
    maxInflightBytes: options.maxInflightBytes,
    purgeIntervalMs: options.purgeIntervalMs,
    dropLogIntervalMs: options.dropLogIntervalMs,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress,
    maxPendingConnectionsPerAddress: options.maxPendingConnectionsPerAddress,
    maxConnectionsPerUser: options.maxConnectionsPerUser,
    maxGuestConnections: options.maxGuestConnections,
    maxGuestConnectionsPerAddress: options.maxGuestConnectionsPerAddress,
    maxKeepaliveSec: options.maxKeepaliveSec,
    connectTimeoutMs: options.connectTimeoutMs,
    loginFailuresPerAddress: options.loginFailuresPerAddress,
    loginFailuresPerName: options.loginFailuresPerName,
    loginFailureDecayMs: options.loginFailureDecayMs,
    maxConcurrentLoginChecks: options.maxConcurrentLoginChecks,
    maxQueuedLoginChecks: options.maxQueuedLoginChecks,
    maxConnectionInflightBytes: options.maxConnectionInflightBytes,
    maxConnectionQueuedBytes: options.maxConnectionQueuedBytes,
    slowConnectionTimeoutMs: options.slowConnectionTimeoutMs,
    guestMaxSubscriptions: options.guestMaxSubscriptions,
    guestMaxWindow: options.guestMaxWindow,
    guestMaxConnectionInflightBytes: options.guestMaxConnectionInflightBytes,
    maxConcurrentReads: options.maxConcurrentReads,
    tailEvents: options.tailEvents,
    tailPreviewBytes: options.tailPreviewBytes,
    maxIngestConnectionBytes: options.maxIngestConnectionBytes,
    maxIngestPendingBytes: options.maxIngestPendingBytes,
    plainMaxSubscriptions: options.plainMaxSubscriptions,
    plainMaxQueuedBytes: options.plainMaxQueuedBytes,
    plainMaxInflight: options.plainMaxInflight,
    maxGroupsPerUser: options.maxGroupsPerUser,
    maxGroupMembers: options.maxGroupMembers,
    groupLeaseMs: options.groupLeaseMs,
    groupRevokeTimeoutMs: options.groupRevokeTimeoutMs,
    groupIdleMs: options.groupIdleMs
  })
  checkInt('createBroker', 'maxGroupsPerUser', limits.maxGroupsPerUser, 1, 10_000)
  checkInt('createBroker', 'maxGroupMembers', limits.maxGroupMembers, 1, 1024)
  checkInt('createBroker', 'groupLeaseMs', limits.groupLeaseMs, 0, 3_600_000)
  checkInt('createBroker', 'groupRevokeTimeoutMs', limits.groupRevokeTimeoutMs, 0, 3_600_000)
  checkInt('createBroker', 'groupIdleMs', limits.groupIdleMs, 0, 365 * 86_400_000)
  checkInt('createBroker', 'maxConnections', limits.maxConnections, 1, 1_000_000)
  checkInt('createBroker', 'maxPacketBytes', limits.maxPacketBytes, 1024, 256 * 1024 * 1024)
  checkInt('createBroker', 'maxWindow', limits.maxWindow, 1, 100_000)
  checkInt('createBroker', 'maxEventsPerFrame', limits.maxEventsPerFrame, 1, 10_000)
  checkInt('createBroker', 'maxFrameBytes', limits.maxFrameBytes, 1024, 16 * 1024 * 1024)
  checkInt('createBroker', 'maxSubscriptions', limits.maxSubscriptions, 1, 100_000)
  checkInt('createBroker', 'maxInflightBytes', limits.maxInflightBytes, 1024, 1024 * 1024 * 1024)
  checkInt('createBroker', 'maxConnectionInflightBytes', limits.maxConnectionInflightBytes, 1024, 1024 * 1024 * 1024)
  checkInt('createBroker', 'maxConnectionQueuedBytes', limits.maxConnectionQueuedBytes, 16 * 1024, 1024 * 1024 * 1024)
  checkInt('createBroker', 'slowConnectionTimeoutMs', limits.slowConnectionTimeoutMs, 100, 86_400_000)
  checkInt('createBroker', 'guestMaxSubscriptions', limits.guestMaxSubscriptions, 1, limits.maxSubscriptions)
  checkInt('createBroker', 'guestMaxWindow', limits.guestMaxWindow, 1, limits.maxWindow)
  checkInt('createBroker', 'guestMaxConnectionInflightBytes', limits.guestMaxConnectionInflightBytes, 1024, limits.maxConnectionInflightBytes)
  checkInt('createBroker', 'maxConcurrentReads', limits.maxConcurrentReads, 1, 10_000)
  checkInt('createBroker', 'plainMaxSubscriptions', limits.plainMaxSubscriptions, 1, 100_000)
  checkInt('createBroker', 'plainMaxQueuedBytes', limits.plainMaxQueuedBytes, 16 * 1024, 1024 * 1024 * 1024)
  checkInt('createBroker', 'plainMaxInflight', limits.plainMaxInflight, 1, 65_535)
  checkInt('createBroker', 'purgeIntervalMs', limits.purgeIntervalMs, 100, 86_400_000)
  checkInt('createBroker', 'dropLogIntervalMs', limits.dropLogIntervalMs, 100, 86_400_000)
  checkInt('createBroker', 'maxConnectionsPerAddress', limits.maxConnectionsPerAddress, 1, 1_000_000)
  checkInt('createBroker', 'maxPendingConnectionsPerAddress', limits.maxPendingConnectionsPerAddress, 1, 1_000_000)
  checkInt('createBroker', 'maxConnectionsPerUser', limits.maxConnectionsPerUser, 1, 1_000_000)
  checkInt('createBroker', 'maxGuestConnections', limits.maxGuestConnections, 0, 1_000_000)
  checkInt('createBroker', 'maxGuestConnectionsPerAddress', limits.maxGuestConnectionsPerAddress, 0, 1_000_000)
  checkInt('createBroker', 'maxKeepaliveSec', limits.maxKeepaliveSec, 1, 65_535)
  checkInt('createBroker', 'connectTimeoutMs', limits.connectTimeoutMs, 100, 600_000)
  checkInt('createBroker', 'tailEvents', limits.tailEvents, 1, 100_000)
  checkInt('createBroker', 'tailPreviewBytes', limits.tailPreviewBytes, 0, 65_536)
  checkInt('createBroker', 'maxIngestConnectionBytes', limits.maxIngestConnectionBytes, 1024, 1024 * 1024 * 1024)
  checkInt('createBroker', 'maxIngestPendingBytes', limits.maxIngestPendingBytes, limits.maxIngestConnectionBytes, 16 * 1024 * 1024 * 1024)
  const clock = options.clock ?? systemClock
  const logger = options.logger ?? silentLogger

  const principals = new WeakMap<Client, Principal>()
  const sessions = new WeakMap<Client, ClientSession>()
  const services = new Map<string, Client>()
  const admission = new ConnectionAdmission(limits)
  const admitted = new WeakMap<Client, Admitted & { refusal?: Refusal }>()
  const throttle = new LoginThrottle({
    failuresPerAddress: limits.loginFailuresPerAddress,
    failuresPerName: limits.loginFailuresPerName,
    failureDecayMs: limits.loginFailureDecayMs,
    maxConcurrentChecks: limits.maxConcurrentLoginChecks,
    maxQueuedChecks: limits.maxQueuedLoginChecks
  }, clock)
  const refused: Record<ConnectionRefusal, number> = {
    maxConnections: 0, clientIdInUse: 0, perAddress: 0, pendingPerAddress: 0, perUser: 0, guests: 0, guestsPerAddress: 0, throttled: 0, busy: 0, will: 0, persistentSession: 0, retain: 0, connectTimeout: 0, idle: 0
  }
  // a flood must not flood the log: at most one line per reason per second, with the count of the
  // lines left out since the last one
  const lastLogged = new Map<ConnectionRefusal, { at: number, skipped: number }>()
  const logRefusal = (reason: ConnectionRefusal, fields: Record<string, unknown>, msg: string): void => {
    const now = clock.now()
    const l = lastLogged.get(reason)
    if (l !== undefined && now - l.at < 1000) {
      l.skipped++
      return
    }
    logger.warn({ reason, ...fields, ...(l !== undefined && l.skipped > 0 ? { alsoRefusedSinceLastLine: l.skipped } : {}) }, msg)
    lastLogged.set(reason, { at: now, skipped: 0 })
  }
  const writers = new WeakMap<Client, ConnectionWriter>()
  const openWriters = new Set<ConnectionWriter>()
  let slowConnectionsClosed = 0
  // logged-in connections by kind, for stats() and metrics
  const loggedIn = { service: 0, client: 0, guest: 0, plain: 0 }
  const loggedInKind = new WeakMap<Client, keyof typeof loggedIn>()

  // [CLI-BACKPRESSURE-1] the broker's frames go straight onto the connection's stream, bounded
  const writerLimits = {
    maxQueuedBytes: limits.maxConnectionQueuedBytes,
    stuckTimeoutMs: limits.slowConnectionTimeoutMs,
    // events stop at the bound; control frames and acks, written anyway, may not go far past it
    hardLimitBytes: limits.maxConnectionQueuedBytes + limits.maxPacketBytes
  }
  const openWriter = (client: Client, topic: string): ConnectionWriter => {
    const subscribed = (): boolean => (client as unknown as { subscriptions: Record<string, unknown> }).subscriptions[topic] !== undefined
    const w = new ConnectionWriter(client.conn, topic, writerLimits, subscribed, (reason, queuedBytes, blockedMs) => {
      slowConnectionsClosed++
      logger.warn({ clientId: client.id, reason, queuedBytes, blockedMs: Math.round(blockedMs) }, reason === 'stuck'
        ? `closing a connection that has not read its socket for ${limits.slowConnectionTimeoutMs} ms`
        : 'closing a connection whose unsent bytes passed the hard limit')
    })
    writers.set(client, w)
    // a connection gone while authenticate ran has had its 'close' already
    if (!(client.conn as unknown as Duplex).destroyed) openWriters.add(w)
    return w
  }

  const tail = new EventTail({ size: limits.tailEvents, previewBytes: limits.tailPreviewBytes })
  // what follows each commit, from service endpoints and plain ingest alike: the endpoints' delivery,
  // the plain view, the dashboard's tail ([OPS-DASH-5]: O(1) per event, no allocation)
  const stored = (events: readonly StoredEvent[]): void => {
    delivery.onStored(events)
    plainView.onStored(events)
    tail.push(events)
  }
  // [CLUSTER-FEED-1] a store shared by several brokers tells every commit, this broker's and the
  // others', in position order: live delivery follows it, not the results of this broker's appends
  const shared = store.onCommitted !== undefined
  store.onCommitted?.((events) => { stored(events) })
  const uplink = new Uplink({
    site,
    store,
    clock,
    logger,
    sendToService: (serviceId, frame) => {
      const c = services.get(serviceId)
      if (c !== undefined) writers.get(c)?.write(frame)
    },
    onStored: (events) => { if (!shared) stored(events) },
    onStoreFailure: (serviceId) => { services.get(serviceId)?.close() }
  })
  const delivery = new Delivery({
    site,
    store,
    clock,
    logger,
    limits: {
      maxWindow: limits.maxWindow,
      maxEventsPerFrame: limits.maxEventsPerFrame,
      maxFrameBytes: limits.maxFrameBytes,
      maxSubscriptions: limits.maxSubscriptions,
      maxInflightBytes: limits.maxInflightBytes,
      maxConnectionInflightBytes: limits.maxConnectionInflightBytes,
      guestMaxSubscriptions: limits.guestMaxSubscriptions,
      guestMaxWindow: limits.guestMaxWindow,
      guestMaxConnectionInflightBytes: limits.guestMaxConnectionInflightBytes,
      maxConcurrentReads: limits.maxConcurrentReads
    },
    groups: { maxGroupsPerUser: limits.maxGroupsPerUser, maxGroupMembers: limits.maxGroupMembers, leaseMs: limits.groupLeaseMs, revokeTimeoutMs: limits.groupRevokeTimeoutMs, groupIdleMs: limits.groupIdleMs }
  })

  // [PLAIN-*] ordinary MQTT clients: a read-only view of stored events, and ingest
  const plainView = new PlainView({
    site: () => site,
    store,
    clock,
    logger,
    limits: {
      maxSubscriptions: limits.plainMaxSubscriptions,
      maxQueuedBytes: limits.plainMaxQueuedBytes,
      slowTimeoutMs: limits.slowConnectionTimeoutMs,
      hardLimitBytes: limits.plainMaxQueuedBytes + limits.maxPacketBytes,
      maxInflight: limits.plainMaxInflight,
      maxConcurrentReads: limits.maxConcurrentReads
    },
    onClose: () => { slowConnectionsClosed++ }
  })
  const plainIngest = new PlainIngest({
    site,
    store,
    clock,
    logger,
    onStored: (events) => { if (!shared) stored(events) },
    maxConnectionBytes: limits.maxIngestConnectionBytes,
    maxPendingBytes: limits.maxIngestPendingBytes
  })

  /**
   * A principal checked against an earlier site, under `next` ([SITE-RELOAD-3]): the same entry with
   * its new definition, or null if it is gone, its secret changed, or (a guest) guests are off.
   */
  const underSite = (p: Principal, next: Site): Principal | null => {
    if (p.kind === 'service') {
      const def = next.services.get(p.service.id)
      return def === undefined || !sameSecret(p.service.secret, def.secret) ? null : { kind: 'service', service: def }
    }
    if (p.kind === 'plain' && p.service !== null) {
      const def = next.services.get(p.service.id)
      return def === undefined || !sameSecret(p.service.secret, def.secret) ? null : { ...p, service: def }
    }
    if (p.user === null) return next.guests ? p : null
    const def = next.users.get(p.user.name)
    return def === undefined || !sameSecret(p.user.secret, def.secret) ? null : p.kind === 'plain' ? { ...p, user: def } : { kind: 'client', key: p.key, user: def }
  }

  const sessionOf = (client: Client, principal: Principal): ClientSession | null => {
    if (principal.kind !== 'client') return null
    let s = sessions.get(client)
    if (s === undefined) {
      const w = writers.get(client) ?? openWriter(client, clientMessageTopic(principal.key))
      const session = delivery.open(principal, w)
      w.onDrain = () => { delivery.drained(session) }
      sessions.set(client, s = session)
    }
    return s
  }

  const aedes = await Aedes.createBroker({
    maxClientsIdLength: 200,
    // [CONN-IDLE-2]
    connectTimeout: limits.connectTimeoutMs,
    preConnect: (client, packet, done) => {
      const a = admitted.get(client)
      // [CONN-IDLE-1] keepalive 0 ("never") or above the maximum counts as the maximum: aedes closes
      // a connection silent for 1.5 times that
      if ((packet.keepalive ?? 0) === 0 || (packet.keepalive ?? 0) > limits.maxKeepaliveSec) packet.keepalive = limits.maxKeepaliveSec
      // [CONN-SESSION-1] no will messages and no persistent sessions: the broker keeps nothing for a
      // connection after it closes; refused with CONNACK 5 in authenticate
      if (a !== undefined && packet.will !== undefined && packet.will !== null) a.refusal = new Refusal('will', 5, 'will messages are not accepted')
      else if (a !== undefined && !packet.clean) a.refusal = new Refusal('persistentSession', 5, 'persistent sessions (clean = false) are not accepted')
      done(null, true)
    },
    // [AUTH-CONNECT-1], [AUTH-THROTTLE-1..4], [CONN-LIMIT-4]
    authenticate: (client, username, password, done) => {
      const a = admitted.get(client)
      const address = a?.address ?? 'unknown'
      const refuse = (err: unknown, delayMs: number): void => {
        if (err instanceof Refusal) {
          refused[err.reason]++
          logRefusal(err.reason, { clientId: client.id, address }, `connection refused: ${err.message}`)
        } else {
          logger.info({ clientId: client.id, address, err: (err as Error).message }, 'connection refused')
        }
        if (delayMs <= 0) done(connectError(err), false)
        else setTimeout(() => { done(connectError(err), false) }, delayMs).unref()
      }
      if (a?.refusal !== undefined) return refuse(a.refusal, 0)
      const gate = async (name: string, check: () => Promise<boolean>): Promise<boolean> => {
        // a connection that went away while its check waited costs no scrypt (and counts as a failure)
        const verdict = await throttle.attempt(address, name, () => client.closed ? Promise.resolve(false) : check())
        if (verdict === 'throttled') throw new Refusal('throttled', 3, 'too many failed logins from this address or for this name; try again later')
        if (verdict === 'busy') throw new Refusal('busy', 3, 'too many logins in progress; try again later')
        if (verdict === 'failed') logger.warn({ clientId: client.id, address, name }, 'login failed')
        return verdict === 'ok'
      }
      const siteAtStart = site
      authenticate(site, client.id, username, password, gate).then((checked) => {
        // [SITE-RELOAD-3] a reload while the secret was checked: the login must hold under the new site
        const principal = site === siteAtStart ? checked : underSite(checked, site)
        if (principal === null) return refuse(new AuthError(ErrorCode.BAD_CREDENTIALS, 'the site changed during the login: this name or secret is no longer valid'), 0)
        const other = (aedes as unknown as { clients: Record<string, Client | undefined> }).clients[client.id]
        const takeover = other !== undefined && other !== client
        // [PLAIN-LOGIN-2] a plain client id is chosen freely: one login may not take over another's connection
        if (takeover && principal.kind === 'plain' && !sameLogin(principals.get(other), principal)) {
          return refuse(new Refusal('clientIdInUse', 2, `client id ${JSON.stringify(client.id)} is in use by another login`), 0)
        }
        const problem = a?.admit(principal, takeover) ?? null
        if (problem !== null) return refuse(new Refusal(problem, 3, `connection limit reached (${problem})`), 0)
        principals.set(client, principal)
        // counted until the stream closes (one already closed has had its 'close')
        if (!(client.conn as unknown as Duplex).destroyed) {
          const kind = principal.kind === 'service' ? 'service' : principal.kind === 'plain' ? 'plain' : principal.user === null ? 'guest' : 'client'
          loggedIn[kind]++
          loggedInKind.set(client, kind)
        }
        if (principal.kind !== 'plain') openWriter(client, principal.kind === 'service' ? serviceAckTopic(principal.service.id) : clientMessageTopic(principal.key))
        if (principal.kind === 'service') services.set(principal.service.id, client)
        done(null, true)
      }, (err: unknown) => {
        const verdict = err instanceof Refusal ? (err.reason === 'throttled' ? 'throttled' : 'busy') : 'failed'
        refuse(err, throttle.refusalDelayMs(address, verdict))
      })
    },
    // [CONN-TOPIC-1] a connection subscribes to its own reply topic only
    authorizeSubscribe: (client, sub, done) => {
      const p = principals.get(client)
      if (p?.kind === 'plain') return plainView.authorizeSubscribe(client, p, sub, done)
      const own = p === undefined ? null : p.kind === 'service' ? serviceAckTopic(p.service.id) : clientMessageTopic(p.key)
      if (sub.topic === own) done(null, sub)
      else done(null, null)
    },
    // [CONN-TOPIC-2] a connection publishes on its own request topic only; frames are handled here,
    // synchronously and in arrival order, and never forwarded
    authorizePublish: (client, packet, done) => {
      const p = client === null ? undefined : principals.get(client)
      if (client === null || p === undefined) return done(new Error('not authorized'))
      // [CONN-RETAIN-1] nothing is retained: aedes would store the message after this hook
      if (packet.retain) {
        refused.retain++
        logRefusal('retain', { clientId: client.id, topic: packet.topic }, 'publish with the retain flag; closing the connection')
        return done(new Error('retained messages are not accepted'))
      }
      if (p.kind === 'plain') return plainIngest.authorizePublish(client, p, packet, done)
      const payload = packet.payload as Buffer
      if (p.kind === 'service' && packet.topic === serviceUpTopic(p.service.id)) {
        uplink.handle(p.service, payload)
        return done(null)
      }
      if (p.kind === 'client' && packet.topic === clientRequestTopic(p.key)) {
        const s = sessionOf(client, p)
        if (s !== null) delivery.handleRequest(s, payload)
        return done(null)
      }
      logger.warn({ clientId: client.id, topic: packet.topic }, 'publish to a foreign topic; closing the connection')
      done(new Error(`publishing on ${packet.topic} is not allowed`))
    },
    authorizeForward: (client, packet) => {
      // [PLAIN-VIEW-1] a plain client gets what the view writes, never a message routed by aedes
      // (its filters, `#` too, would match the endpoints' and plain publishers' topics)
      if (principals.get(client)?.kind === 'plain') return null
      // frames on request topics are consumed by the broker, never delivered
      // and so are plain MQTT raises ([PLAIN-INGEST-1])
      return packet.topic.endsWith('/up') || packet.topic.endsWith('/req') || packet.topic.startsWith('herald/v1/raise/') ? null : packet
    }
  })
  // aedes' memory persistence would keep an entry per client id that ever sent a PUBACK
  guardOutgoingAcks((aedes as unknown as { persistence: OutgoingPersistence }).persistence)
  aedes.on('clientDisconnect', (client) => {
    const s = sessions.get(client)
    if (s !== undefined) delivery.close(s)
    const p = principals.get(client)
    if (p?.kind === 'plain') {
      plainView.closed(client)
      plainIngest.closed(client)
    }
    if (p?.kind === 'service' && services.get(p.service.id) === client) services.delete(p.service.id)
  })
  aedes.on('subscribe', (subs, client) => {
    if (principals.get(client)?.kind === 'plain') plainView.subscribed(client, subs)
  })
  aedes.on('unsubscribe', (topics, client) => {
    if (principals.get(client)?.kind === 'plain') plainView.unsubscribed(client, topics)
  })
  aedes.on('clientError', (client, err) => { logger.debug({ clientId: client.id, err: err.message }, 'client error') })
  aedes.on('keepaliveTimeout', (client) => {
    refused.idle++
    logRefusal('idle', { clientId: client.id }, 'closing a connection silent for 1.5 times its keepalive')
  })
  aedes.on('connectionError', (_client, err) => {
    // aedes' own message for [CONN-IDLE-2] (a connection without CONNECT has no client id yet)
    if (err.message === 'connect did not arrive in time') refused.connectTimeout++
    logger.debug({ err: err.message }, 'connection error')
  })

  const purge = setInterval(() => {
    store.purgeExpired(clock.now()).then((n) => {
      if (n > 0) logger.info({ purged: n }, 'purged expired events')
    }, (err: unknown) => { logger.error({ err }, 'purging expired events failed') })
  }, limits.purgeIntervalMs)
  purge.unref()
  // [STORE-COUNT-1] one log line per interval with what the store dropped meanwhile
  const drops = new DropReport(store, logger)
  const dropLog = setInterval(() => { drops.report() }, limits.dropLogIntervalMs)
  dropLog.unref()

  /**
   * [SITE-RELOAD-3], [SITE-RELOAD-4] every logged-in connection under the new site: kept with its
   * entry's new definition, or closed. One walk over the connections at each reload, nothing on the
   * hot path. (A listener with connections of its own, e.g. plain MQTT, adds its walk next to this.)
   */
  const recheckConnections = (next: Site): { closed: number } => {
    let n = 0
    const clients = Object.values((aedes as unknown as { clients: Record<string, Client | undefined> }).clients)
    for (const client of clients) {
      if (client === undefined) continue
      const p = principals.get(client)
      if (p === undefined) continue // not logged in yet: the login checks the site it ends under
      const q = underSite(p, next)
      if (q === null) {
        n++
        logger.info({ clientId: client.id }, 'closing a connection: its entry left the site, its secret changed, or guests are no longer admitted')
        // no frame of it is handled from now on (authorizePublish finds no principal)
        principals.delete(client)
        if (p.kind === 'service' && services.get(p.service.id) === client) services.delete(p.service.id)
        client.close()
        continue
      }
      principals.set(client, q)
    }
    return { closed: n }
  }

  const reloadSite = (next: Site): SiteChangeReport => {
    if (closed) throw new ConfigError('the broker is closed')
    const stored = store.storedByEvent?.() ?? null
    const change: SiteChange = diffSites(site, next, stored)
    // [SITE-RELOAD-2] refused as a whole: nothing of it applies
    if (change.problems.length > 0) throw siteChangeRefused(change.problems)
    const prev = site
    site = next
    uplink.setSite(next)
    plainIngest.setSite(next)
    const { closed: closedConnections } = recheckConnections(next)
    // [SITE-RELOAD-5] live subscriptions under the users' new roles; more access: told to ask again
    const grew: ClientSession[] = []
    delivery.recheck(next, (session) => {
      const p = session.principal
      const q = underSite(p, next)
      if (q === null || q.kind !== 'client') return null // its connection was closed above
      if (accessGrew(prev, p.user, next, q.user)) grew.push(session)
      return q
    })
    for (const session of grew) delivery.notifyAccessGranted(session)
    // [PLAIN-VIEW-5] plain subscribers under their users' new roles (their connections, if the user
    // left the site or its password changed, were closed above)
    plainView.recheck()
    logger.debug({ closedConnections, notified: grew.length }, 'site applied')
    return change.report
  }

  let closed = false
  return {
    store,
    get site () { return site },
    reloadSite,
    handle (stream: Duplex): void {
      if (closed) {
        stream.destroy()
        return
      }
      const a = admission.open(addressKey((stream as Partial<Socket>).remoteAddress))
      if (typeof a === 'string') {
        refused[a]++
        logRefusal(a, { address: addressKey((stream as Partial<Socket>).remoteAddress) }, 'connection closed unserved: limit reached')
        stream.destroy()
        return
      }
      const client = aedes.handle(stream)
      admitted.set(client, a)
      // [CONN-LIMIT-2] aedes reads through 'readable'; read() also emits 'data' with each chunk
      // before aedes parses it, so the guard sees every byte first without taking over the flow
      const guard = new PacketSizeGuard(limits.maxPacketBytes)
      stream.on('data', (chunk: Buffer) => {
        const problem = guard.feed(chunk)
        if (problem !== null) {
          logger.warn({ problem }, 'closing a connection')
          stream.destroy()
        }
      })
      stream.once('close', () => {
        a.release()
        const kind = loggedInKind.get(client)
        if (kind !== undefined) {
          loggedIn[kind]--
          loggedInKind.delete(client)
        }
        const w = writers.get(client)
        if (w !== undefined) {
          w.close()
          openWriters.delete(w)
        }
        const s = sessions.get(client)
        if (s !== undefined) delivery.close(s)
        plainView.closed(client)
      })
    },
    stats (): BrokerStats {
      return {
        connections: admission.connections,
        clientSessions: delivery.sessionCount,
        storedEvents: store.count(),
        head: store.head(),
        uplink: { ...uplink.stats },
        delivered: delivery.delivered,
        dropped: store.counters(),
        logins: { ...throttle.stats },
        connectionsRefused: { ...refused },
        slowConnectionsClosed,
        blockedConnections: [...openWriters].filter((w) => w.blocked).length,
        connectionsByKind: { ...loggedIn, pending: Math.max(0, admission.connections - loggedIn.service - loggedIn.client - loggedIn.guest - loggedIn.plain) },
        perEvent: perEventStats(uplink, delivery, plainIngest),
        storedByEvent: Object.fromEntries(store.storedByEvent?.() ?? []),
        keysByEvent: Object.fromEntries(store.keysByEvent?.() ?? []),
        lag: Object.fromEntries(delivery.lag(store.head())),
        ingest: { ...plainIngest.stats, refused: { ...plainIngest.stats.refused } },
        plainView: plainView.stats
      }
    },
    async checkAdmin (name: string, password: string, address: string | undefined): Promise<AdminCheck> {
      const key = addressKey(address)
      const user = site.users.get(name)
      // an unknown name is hashed anyway (against any password), as in authenticate()
      const against = user?.secret ?? site.users.values().next().value?.secret
      const verdict = await throttle.attempt(key, name, async () => (await against?.verify(password)) === true && user !== undefined)
      if (verdict === 'ok' && user !== undefined) {
        if (isAdmin(site, user)) return { ok: true, user: user.name }
        logger.warn({ address: key, name }, 'dashboard login refused: not an admin')
        return { ok: false, reason: 'notAdmin', delayMs: 0 }
      }
      if (verdict === 'failed') logger.warn({ address: key, name }, 'dashboard login failed')
      const v = verdict === 'ok' ? 'failed' : verdict
      return { ok: false, reason: v === 'failed' ? 'refused' : v, delayMs: throttle.refusalDelayMs(key, v) }
    },
    isAdminUser (name: string): boolean {
      const user = site.users.get(name)
      return user !== undefined && isAdmin(site, user)
    },
    recentEvents (filter?: TailFilter, limit?: number): TailEntry[] {
      return tail.read(filter, limit)
    },
    connected (maxClients: number): ConnectedEndpoints {
      const clients = delivery.summaries(store.head(), maxClients)
      return { services: [...services.keys()].sort(), clients, clientsLeftOut: Math.max(0, delivery.sessionCount - clients.length) }
    },
    async retainedCount (): Promise<number> {
      let n = 0
      const { persistence } = aedes as unknown as { persistence: { createRetainedStream (pattern: string): AsyncIterable<unknown> } }
      for await (const _ of persistence.createRetainedStream('#')) n++
      return n
    },
    async close (): Promise<void> {
      if (closed) return
      closed = true
      clearInterval(purge)
      clearInterval(dropLog)
      drops.report()
      await new Promise<void>((resolve) => { aedes.close(() => { resolve() }) })
      await store.close()
    }
  }
}

/**
 * The broker's Prometheus metrics ([OPS-METRICS-1], docs/metrics.md). Everything but the commit
 * latency histograms is read from `broker.stats()` when scraped (prom-client `collect()`), so the
 * event path pays a counter increment at most; the histograms take one observation per group commit.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Broker, BrokerStats } from './broker.js'

/** Bucket bounds of the commit and sync latency histograms, in seconds. */
export const COMMIT_SECONDS_BUCKETS = Object.freeze([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])

/** A registry with the broker's metrics (and Node's process metrics), read from `broker` at each scrape. */
export function brokerMetricsRegistry (broker: Broker): Registry {
  const registry = new Registry()
  const registers = [registry]
  collectDefaultMetrics({ register: registry })

  // one stats() per scrape, shared by every collect() of that scrape
  let snapshot: BrokerStats | null = null
  const stats = (): BrokerStats => {
    if (snapshot === null) {
      snapshot = broker.stats()
      setImmediate(() => { snapshot = null })
    }
    return snapshot
  }
  const perEvent = (pick: (e: BrokerStats['perEvent'][string]) => number) => function (this: Counter): void {
    this.reset()
    for (const [event, e] of Object.entries(stats().perEvent)) this.inc({ event }, pick(e))
  }
  const dropped = (pick: (c: BrokerStats['dropped'][string]) => number) => function (this: Counter): void {
    this.reset()
    for (const [event, c] of Object.entries(stats().dropped)) this.inc({ event }, pick(c))
  }

  new Gauge({
    name: 'herald_connections',
    help: 'Connections open now, by kind (service, client, guest; plain: plain MQTT clients; pending: not logged in yet)',
    labelNames: ['kind'],
    registers,
    collect () {
      const k = stats().connectionsByKind
      this.set({ kind: 'service' }, k.service)
      this.set({ kind: 'client' }, k.client)
      this.set({ kind: 'guest' }, k.guest)
      this.set({ kind: 'plain' }, k.plain)
      this.set({ kind: 'pending' }, k.pending)
    }
  })
  new Counter({
    name: 'herald_connections_refused_total',
    help: 'Connections refused or closed by a limit, by reason',
    labelNames: ['reason'],
    registers,
    collect () {
      this.reset()
      for (const [reason, n] of Object.entries(stats().connectionsRefused)) this.inc({ reason }, n)
    }
  })
  new Counter({
    name: 'herald_authentication_failures_total',
    help: 'Logins refused: bad_credentials (the secret check failed), throttled (a failure budget was spent), busy (too many checks waiting)',
    labelNames: ['reason'],
    registers,
    collect () {
      const l = stats().logins
      this.reset()
      this.inc({ reason: 'bad_credentials' }, l.failed)
      this.inc({ reason: 'throttled' }, l.throttled)
      this.inc({ reason: 'busy' }, l.busy)
    }
  })
  new Counter({
    name: 'herald_slow_connections_closed_total',
    help: 'Connections closed because they did not read their socket (above maxConnectionQueuedBytes too long, or far above it)',
    registers,
    collect () {
      this.reset()
      this.inc(stats().slowConnectionsClosed)
    }
  })
  new Gauge({
    name: 'herald_blocked_connections',
    help: 'Connections above maxConnectionQueuedBytes now, waiting for their socket to drain',
    registers,
    collect () { this.set(stats().blockedConnections) }
  })
  // the plain-MQTT view [PLAIN-VIEW-7]
  new Gauge({ name: 'herald_plain_view_subscriptions', help: 'Subscriptions of plain MQTT clients to the read-only view now', registers, collect () { this.set(stats().plainView.subscriptions) } })
  new Counter({ name: 'herald_plain_view_messages_sent_total', help: 'Messages (events, live and retained) sent to plain MQTT clients', registers, collect () { this.reset(); this.inc(stats().plainView.sent) } })
  new Counter({ name: 'herald_plain_view_messages_dropped_total', help: 'Live QoS 0 messages to plain MQTT clients not sent because the connection was above plainMaxQueuedBytes', registers, collect () { this.reset(); this.inc(stats().plainView.dropped) } })
  new Counter({ name: 'herald_events_stored_total', help: 'Events stored (committed and fsync\'d), per event name', labelNames: ['event'], registers, collect: perEvent((e) => e.stored) })
  new Counter({ name: 'herald_events_delivered_total', help: 'Events sent to client subscriptions, per event name', labelNames: ['event'], registers, collect: perEvent((e) => e.delivered) })
  // [CLI-GAP-4]
  new Counter({ name: 'herald_subscription_gaps_total', help: 'Times a client subscription was found to have missed events removed (pushed out, expired) before it was sent them, per event name', labelNames: ['event'], registers, collect: perEvent((e) => e.gaps) })
  new Counter({ name: 'herald_subscription_gap_events_total', help: 'Events client subscriptions missed that way (a lower bound where the store knows only a range), per event name', labelNames: ['event'], registers, collect: perEvent((e) => e.gapMissed) })
  new Counter({
    name: 'herald_events_refused_total',
    help: 'Events the broker refused (SVC-REJECT-1), per event name ("(unknown)" for names not in the site) and error code',
    labelNames: ['event', 'code'],
    registers,
    collect () {
      this.reset()
      for (const [event, e] of Object.entries(stats().perEvent)) {
        for (const [code, n] of Object.entries(e.refused)) this.inc({ event, code }, n)
      }
    }
  })
  new Counter({ name: 'herald_events_pushed_out_total', help: 'Events pushed out of a full queue unexpired (STORE-QUEUE-1), per event name', labelNames: ['event'], registers, collect: dropped((c) => c.pushedOut) })
  new Counter({ name: 'herald_events_expired_total', help: 'Events whose lifetime ran out: purged, pushed out once expired, or expired on arrival (STORE-EXPIRE-1/2), per event name', labelNames: ['event'], registers, collect: dropped((c) => c.expired + c.expiredOnArrival) })
  new Counter({ name: 'herald_events_replaced_total', help: 'Replacing events removed by a newer instance (STORE-REPLACE-1), per event name', labelNames: ['event'], registers, collect: dropped((c) => c.replaced) })
  new Counter({
    name: 'herald_events_duplicate_total',
    help: 'Events resent after a lost ACK: acknowledged again, not stored (STORE-DEDUP-1)',
    registers,
    collect () {
      this.reset()
      this.inc(stats().uplink.duplicates)
    }
  })
  new Counter({
    name: 'herald_up_frames_malformed_total',
    help: 'UP frames refused as malformed',
    registers,
    collect () {
      this.reset()
      this.inc(stats().uplink.malformed)
    }
  })
  // [PLAIN-INGEST-*] plain MQTT publishes
  new Counter({
    name: 'herald_ingest_publishes_total',
    help: 'Plain MQTT publishes committed (PLAIN-INGEST-1), by outcome: stored, duplicate (a key already handled, STORE-DEDUP-2), null_dropped (a null over a null)',
    labelNames: ['outcome'],
    registers,
    collect () {
      const i = stats().ingest
      this.reset()
      this.inc({ outcome: 'stored' }, i.stored)
      this.inc({ outcome: 'duplicate' }, i.duplicates)
      this.inc({ outcome: 'null_dropped' }, i.nullsDropped)
    }
  })
  new Counter({
    name: 'herald_ingest_refused_total',
    help: 'Plain MQTT publishes that closed their connection (PLAIN-INGEST-5), by reason',
    labelNames: ['reason'],
    registers,
    collect () {
      this.reset()
      for (const [reason, n] of Object.entries(stats().ingest.refused)) this.inc({ reason }, n)
    }
  })
  new Gauge({
    name: 'herald_ingest_waiting_bytes',
    help: 'Payload bytes of plain MQTT publishes waiting for their commit now (PLAIN-INGEST-6)',
    registers,
    collect () { this.set(stats().ingest.waitingBytes) }
  })
  new Gauge({
    name: 'herald_stored_events',
    help: 'Events in the store now (expired but not yet purged ones included), per event name',
    labelNames: ['event'],
    registers,
    collect () {
      this.reset()
      for (const [event, n] of Object.entries(stats().storedByEvent)) this.set({ event }, n)
    }
  })
  new Gauge({
    name: 'herald_stored_keys',
    help: 'Keys holding an instance now, per keyed replacing event name, all services (STORE-KEY-3)',
    labelNames: ['event'],
    registers,
    collect () {
      this.reset()
      for (const [event, n] of Object.entries(stats().keysByEvent ?? {})) this.set({ event }, n)
    }
  })
  new Gauge({
    name: 'herald_store_head_position',
    help: 'The highest position the store has assigned',
    registers,
    collect () { this.set(stats().head) }
  })
  new Gauge({
    name: 'herald_subscriptions',
    help: 'Client subscriptions now, per event name',
    labelNames: ['event'],
    registers,
    collect () {
      this.reset()
      for (const [event, l] of Object.entries(stats().lag)) this.set({ event }, l.subscriptions)
    }
  })
  new Gauge({
    name: 'herald_subscription_max_lag_positions',
    help: 'Largest lag of a subscription of this event name: the store head minus the last position sent to it (0 when caught up)',
    labelNames: ['event'],
    registers,
    collect () {
      this.reset()
      for (const [event, l] of Object.entries(stats().lag)) this.set({ event }, l.max)
    }
  })
  new Gauge({
    name: 'herald_subscription_summed_lag_positions',
    help: 'Lag summed over the subscriptions of this event name, in positions',
    labelNames: ['event'],
    registers,
    collect () {
      this.reset()
      for (const [event, l] of Object.entries(stats().lag)) this.set({ event }, l.total)
    }
  })
  const commit = new Histogram({ name: 'herald_store_commit_duration_seconds', help: 'Duration of one group commit of the event store (writes, COMMIT and fsync)', buckets: [...COMMIT_SECONDS_BUCKETS], registers })
  const sync = new Histogram({ name: 'herald_store_sync_duration_seconds', help: 'Duration of the COMMIT of one group commit, where SQLite writes the WAL and fsyncs it', buckets: [...COMMIT_SECONDS_BUCKETS], registers })
  broker.store.observeCommits?.((commitSeconds, syncSeconds) => {
    commit.observe(commitSeconds)
    sync.observe(syncSeconds)
  })
  return registry
}

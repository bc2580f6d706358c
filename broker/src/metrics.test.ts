import { describe, expect, it } from 'vitest'
import type { Broker, BrokerStats } from './broker.js'
import type { CommitObserver, EventStore } from './event-store/event-store.js'
import { brokerMetricsRegistry } from './metrics.js'

/** A broker whose stats() are `stats` and whose store takes a commit observer: the mapping alone. */
function fakeBroker (stats: BrokerStats): { broker: Broker, commit: (c: number, s: number) => void } {
  let observer: CommitObserver | null = null
  const store = { observeCommits: (o: CommitObserver | null) => { observer = o } } as unknown as EventStore
  const broker = { stats: () => stats, store } as unknown as Broker
  return { broker, commit: (c, s) => { observer?.(c, s) } }
}

const STATS: BrokerStats = {
  connections: 6,
  clientSessions: 3,
  storedEvents: 9,
  head: 40,
  uplink: { frames: 10, stored: 12, duplicates: 2, rejected: 3, malformed: 1, outOfOrder: 0, expiredOnArrival: 1, nullsDropped: 0 },
  delivered: 7,
  dropped: { readings: { pushedOut: 4, replaced: 0, expired: 2, expiredOnArrival: 1, nullsDropped: 0 }, temperature: { pushedOut: 0, replaced: 5, expired: 0, expiredOnArrival: 0, nullsDropped: 0 } },
  logins: { checks: 9, succeeded: 5, failed: 4, throttled: 2, busy: 1 },
  connectionsRefused: { maxConnections: 0, clientIdInUse: 0, perAddress: 3, pendingPerAddress: 0, perUser: 0, guests: 0, guestsPerAddress: 0, throttled: 2, busy: 1, will: 0, persistentSession: 0, retain: 0, connectTimeout: 0, idle: 0 },
  slowConnectionsClosed: 2,
  blockedConnections: 1,
  connectionsByKind: { service: 2, client: 2, guest: 1, plain: 3, pending: 1 },
  perEvent: {
    readings: { stored: 10, delivered: 6, refused: { PAYLOAD_TOO_LARGE: 2 }, gaps: 2, gapMissed: 40 },
    temperature: { stored: 2, delivered: 1, refused: {}, gaps: 0, gapMissed: 0 },
    '(unknown)': { stored: 0, delivered: 0, refused: { UNKNOWN_EVENT: 1 }, gaps: 0, gapMissed: 0 }
  },
  storedByEvent: { readings: 8, temperature: 1 },
  keysByEvent: { thermostat: 2 },
  lag: { readings: { subscriptions: 2, max: 30, total: 35 } },
  ingest: {
    accepted: 12,
    stored: 9,
    duplicates: 2,
    nullsDropped: 1,
    refused: { notService: 0, malformedTopic: 1, unknownEvent: 3, notAuthorized: 0, wrongCategory: 0, payloadTooLarge: 2, invalidPayload: 0, qos2: 0, storeFailed: 0, keyLimit: 0 },
    waitingBytes: 512,
    held: 0
  },
  plainView: { subscribers: 1, subscriptions: 2, sent: 11, dropped: 3, closed: { stuck: 1, overflow: 0, inflight: 0 } }
}

/** name{labels} -> value of every sample. */
async function samples (broker: Broker): Promise<Map<string, number>> {
  const text = await brokerMetricsRegistry(broker).metrics()
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}

describe('broker metrics [OPS-METRICS-1]', () => {
  it('map stats() to conventional names and labels at scrape time', async () => {
    const { broker } = fakeBroker(STATS)
    const m = await samples(broker)
    expect(Object.fromEntries([...m].filter(([k]) => k.startsWith('herald_') && !k.startsWith('herald_store_commit') && !k.startsWith('herald_store_sync') && !k.startsWith('herald_connections_refused') && !k.startsWith('herald_ingest_refused')))).toEqual({
      'herald_connections{kind="service"}': 2,
      'herald_connections{kind="client"}': 2,
      'herald_connections{kind="guest"}': 1,
      'herald_connections{kind="plain"}': 3,
      'herald_connections{kind="pending"}': 1,
      'herald_authentication_failures_total{reason="bad_credentials"}': 4,
      'herald_authentication_failures_total{reason="throttled"}': 2,
      'herald_authentication_failures_total{reason="busy"}': 1,
      herald_slow_connections_closed_total: 2,
      herald_blocked_connections: 1,
      herald_plain_view_subscriptions: 2,
      herald_plain_view_messages_sent_total: 11,
      herald_plain_view_messages_dropped_total: 3,
      'herald_events_stored_total{event="readings"}': 10,
      'herald_events_stored_total{event="temperature"}': 2,
      'herald_events_stored_total{event="(unknown)"}': 0,
      'herald_events_delivered_total{event="readings"}': 6,
      'herald_events_delivered_total{event="temperature"}': 1,
      'herald_events_delivered_total{event="(unknown)"}': 0,
      'herald_subscription_gaps_total{event="readings"}': 2,
      'herald_subscription_gaps_total{event="temperature"}': 0,
      'herald_subscription_gaps_total{event="(unknown)"}': 0,
      'herald_subscription_gap_events_total{event="readings"}': 40,
      'herald_subscription_gap_events_total{event="temperature"}': 0,
      'herald_subscription_gap_events_total{event="(unknown)"}': 0,
      'herald_events_refused_total{event="readings",code="PAYLOAD_TOO_LARGE"}': 2,
      'herald_events_refused_total{event="(unknown)",code="UNKNOWN_EVENT"}': 1,
      'herald_events_pushed_out_total{event="readings"}': 4,
      'herald_events_pushed_out_total{event="temperature"}': 0,
      'herald_events_expired_total{event="readings"}': 3,
      'herald_events_expired_total{event="temperature"}': 0,
      'herald_events_replaced_total{event="readings"}': 0,
      'herald_events_replaced_total{event="temperature"}': 5,
      herald_events_duplicate_total: 2,
      herald_up_frames_malformed_total: 1,
      'herald_ingest_publishes_total{outcome="stored"}': 9,
      'herald_ingest_publishes_total{outcome="duplicate"}': 2,
      'herald_ingest_publishes_total{outcome="null_dropped"}': 1,
      herald_ingest_waiting_bytes: 512,
      'herald_stored_events{event="readings"}': 8,
      'herald_stored_events{event="temperature"}': 1,
      'herald_stored_keys{event="thermostat"}': 2,
      herald_store_head_position: 40,
      'herald_subscriptions{event="readings"}': 2,
      'herald_subscription_max_lag_positions{event="readings"}': 30,
      'herald_subscription_summed_lag_positions{event="readings"}': 35
    })
    expect(m.get('herald_connections_refused_total{reason="perAddress"}')).toBe(3)
    expect(m.get('herald_connections_refused_total{reason="idle"}')).toBe(0)
    expect(m.get('herald_ingest_refused_total{reason="unknownEvent"}')).toBe(3)
    expect(m.get('herald_ingest_refused_total{reason="payloadTooLarge"}')).toBe(2)
    expect(m.get('herald_ingest_refused_total{reason="qos2"}')).toBe(0)
    // Node's process metrics are there too
    expect(m.has('process_cpu_seconds_total')).toBe(true)
  })

  it('observe each commit in the latency histograms', async () => {
    const { broker, commit } = fakeBroker(STATS)
    const registry = brokerMetricsRegistry(broker)
    commit(0.004, 0.003)
    commit(0.2, 0.15)
    const text = await registry.metrics()
    expect(text).toContain('herald_store_commit_duration_seconds_count 2')
    expect(text).toContain('herald_store_commit_duration_seconds_bucket{le="0.005"} 1')
    expect(text).toContain('herald_store_sync_duration_seconds_bucket{le="0.0025"} 0')
    expect(text).toContain('herald_store_sync_duration_seconds_bucket{le="0.005"} 1')
    expect(text).toContain('herald_store_sync_duration_seconds_count 2')
  })
})

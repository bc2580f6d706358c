/**
 * The PostgreSQL event store's schema and its versioned migrations ([PG-SCHEMA-1], [PG-SCHEMA-2]).
 *
 * Tables (all prefixed `herald_`, so the store can share a database):
 * - `herald_meta(key, value)`: `schema` (version) and `head`, the highest position ever assigned.
 *   The `head` row is the commit-order lock of [PG-POS-1]: every writing transaction locks it first.
 * - `herald_dedup(service, instance, last_seq)`: [STORE-DEDUP-1].
 * - `herald_dedup_keys(service, instance, key, seq)`: [STORE-DEDUP-2].
 * - `herald_events(position, ...)`: one row per stored event; `recipient` is '' for non-private events.
 * - `herald_queues(service, event, recipient, rkey, count)`: rows per queue, kept in the transactions
 *   that change them, so push-out deletes exactly the oldest extras without counting the queue.
 * - `herald_keys(service, event, count)`: [STORE-KEY-3] keys stored per (service, event) of a keyed
 *   event, kept in the transactions that add or evict keys (under the head lock: exact across brokers).
 *
 * Versions: 1 the tables above without keys; 2 [STORE-KEY-1] `rkey` (the replacing key, '' for
 * unkeyed events) on herald_events and herald_queues, the queue index with it, herald_keys, and a
 * partial index of the null keyed instances (the oldest null key of [STORE-KEY-3]).
 */
import type { ClientBase } from 'pg'
import { PersistenceError } from '@herald/protocol'

/** Migration i takes a database from version i to i + 1. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE herald_dedup (
     service text NOT NULL, instance text NOT NULL, last_seq bigint NOT NULL,
     PRIMARY KEY (service, instance));
   CREATE TABLE herald_dedup_keys (
     service text NOT NULL, instance text NOT NULL, key text NOT NULL, seq bigint NOT NULL,
     PRIMARY KEY (service, instance, key));
   CREATE INDEX herald_dedup_keys_age ON herald_dedup_keys (service, instance, seq);
   CREATE TABLE herald_events (
     position bigint PRIMARY KEY,
     service text NOT NULL, instance text NOT NULL, seq bigint NOT NULL,
     event text NOT NULL, category smallint NOT NULL, recipient text NOT NULL,
     raised_at bigint NOT NULL, received_at bigint NOT NULL, expires_at bigint,
     flags smallint NOT NULL, payload_kind smallint NOT NULL, payload bytea NOT NULL,
     upload_age bigint NOT NULL DEFAULT 0);
   CREATE INDEX herald_events_read ON herald_events (event, recipient, position);
   CREATE INDEX herald_events_queue ON herald_events (service, event, recipient, position);
   CREATE INDEX herald_events_expiry ON herald_events (expires_at) WHERE expires_at IS NOT NULL;
   CREATE TABLE herald_queues (
     service text NOT NULL, event text NOT NULL, recipient text NOT NULL, count bigint NOT NULL,
     PRIMARY KEY (service, event, recipient));
   INSERT INTO herald_meta (key, value) VALUES ('head', 0) ON CONFLICT DO NOTHING;`,
  // 1 -> 2: replacing keys ([STORE-KEY-1..3]); existing rows are unkeyed ('')
  `ALTER TABLE herald_events ADD COLUMN rkey text NOT NULL DEFAULT '';
   DROP INDEX herald_events_queue;
   CREATE INDEX herald_events_queue ON herald_events (service, event, recipient, rkey, position);
   CREATE INDEX herald_events_null_keys ON herald_events (service, event, position) WHERE rkey <> '' AND (flags & 1) <> 0;
   ALTER TABLE herald_queues ADD COLUMN rkey text NOT NULL DEFAULT '';
   ALTER TABLE herald_queues DROP CONSTRAINT herald_queues_pkey;
   ALTER TABLE herald_queues ADD PRIMARY KEY (service, event, recipient, rkey);
   CREATE TABLE herald_keys (
     service text NOT NULL, event text NOT NULL, count bigint NOT NULL,
     PRIMARY KEY (service, event));`
]

/** The schema version this broker writes and reads. */
export const PG_SCHEMA_VERSION = MIGRATIONS.length

/** Any number: the advisory lock that serialises migrations of brokers starting at once. */
const MIGRATION_LOCK = 0x4865_7261

/**
 * [PG-SCHEMA-1] Brings the database to PG_SCHEMA_VERSION in one transaction, under an advisory
 * lock (brokers starting together migrate once). [PG-SCHEMA-2] A newer version is refused.
 * `target` (tests only) stops at an older version.
 */
export async function migrate (client: ClientBase, where: string, target = PG_SCHEMA_VERSION): Promise<{ from: number, to: number }> {
  await client.query('BEGIN')
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
    await client.query('CREATE TABLE IF NOT EXISTS herald_meta (key text PRIMARY KEY, value bigint NOT NULL)')
    const r = await client.query<{ value: number }>("SELECT value FROM herald_meta WHERE key = 'schema'")
    const from = r.rows.length === 0 ? 0 : Number(r.rows[0]!.value)
    if (from > PG_SCHEMA_VERSION) {
      throw new PersistenceError(`event store: ${where} has schema version ${from}; this broker reads version ${PG_SCHEMA_VERSION} (upgrade the broker)`)
    }
    const to = Math.max(from, Math.min(target, PG_SCHEMA_VERSION))
    for (let v = from; v < to; v++) await client.query(MIGRATIONS[v]!)
    await client.query(`INSERT INTO herald_meta (key, value) VALUES ('schema', $1)
      ON CONFLICT (key) DO UPDATE SET value = excluded.value`, [to])
    await client.query('COMMIT')
    return { from, to }
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
}

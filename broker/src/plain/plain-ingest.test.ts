/**
 * Plain-MQTT ingest [PLAIN-INGEST-*] on a real broker over real TCP sockets, with raw MQTT
 * connections: what is stored, when the PUBACK goes out, what closes a connection, the bounds.
 * The end-to-end proofs (real processes, mosquitto_pub, SIGKILL) are in test/plain-ingest.test.ts.
 */
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, describe, expect, it } from 'vitest'
import { PayloadKind, PersistenceError, silentLogger, type Logger, type Site, type StoredEvent } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { tempDir } from '@herald/node-runtime/testing'
import { waitFor } from '@herald/protocol/testing'
import type { Packet } from 'mqtt-packet'
import { createBroker, type Broker, type BrokerOptions } from '../broker.js'
import type { AppendBatch, AppendResult, EventStore, ReadQuery } from '../event-store/event-store.js'
import { MemoryEventStore } from '../event-store/memory-event-store.js'
import { createSqliteEventStore } from '../event-store/sqlite-event-store.js'
import { listenTcp, type TcpListener } from '../listeners/tcp-listener.js'
import { RawMqtt } from '../testing/raw-mqtt.js'
import { INGEST_INSTANCE } from './plain-ingest.js'

let site: Promise<Site> | null = null
const testSite = (): Promise<Site> => {
  site ??= parseSite({
    guests: true,
    events: [
      { name: 'temperature', category: 'replacing', access: 'everyone' },
      { name: 'readings', category: 'queueing', lifetime: '1d', maxQueueSize: 1000, maxPayload: 1000, access: 'authenticated' },
      { name: 'notices', category: 'private', lifetime: '1h', maxPerRecipient: 100, access: 'authenticated' },
      { name: 'other', category: 'queueing', lifetime: '1d', access: 'authenticated' }
    ],
    services: [
      { id: 'svc', secret: 'svc-secret-1', events: ['temperature', 'readings', 'notices'] },
      { id: 'svc2', secret: 'svc2-secret-1', events: ['other'] }
    ],
    users: [{ name: 'alice', password: 'alice-password' }]
  })
  return site
}

/** A memory store whose appends wait, while `gated`, until the test releases them. */
class GatedStore implements EventStore {
  readonly inner: MemoryEventStore
  gated = true
  /** Appends fail (after the gate) as a broken disk's would. */
  failing = false
  appends = 0
  private readonly waiting: Array<() => void> = []
  constructor (s: Site) { this.inner = new MemoryEventStore({ limitsOf: (n) => s.events.get(n) }) }
  async append (batch: AppendBatch): Promise<AppendResult> {
    this.appends++
    if (this.gated) await new Promise<void>((resolve) => this.waiting.push(resolve))
    if (this.failing) throw new PersistenceError('event store: commit failed (SQLITE_IOERR)')
    return await this.inner.append(batch)
  }

  /** Lets the oldest `n` waiting appends go on. */
  release (n = Infinity): void {
    for (const r of this.waiting.splice(0, n)) r()
  }

  lastSeq (s: string, i: string): number { return this.inner.lastSeq(s, i) }
  async read (q: ReadQuery): Promise<StoredEvent[]> { return await this.inner.read(q) }
  head (): number { return this.inner.head() }
  count (): number { return this.inner.count() }
  async purgeExpired (now: number): Promise<number> { return await this.inner.purgeExpired(now) }
  counters (): ReturnType<EventStore['counters']> { return this.inner.counters() }
  async close (): Promise<void> { this.release(); await this.inner.close() }
}

let running: { broker: Broker, listener: TcpListener } | null = null
const open: RawMqtt[] = []
afterEach(async () => {
  for (const c of open.splice(0)) c.destroy()
  await running?.listener.close()
  await running?.broker.close()
  running = null
})

async function start (options: Partial<BrokerOptions> & { store?: EventStore } = {}): Promise<{ broker: Broker, port: number, store: EventStore }> {
  const s = await testSite()
  const store = options.store ?? new MemoryEventStore({ limitsOf: (n) => s.events.get(n) })
  const broker = await createBroker({ site: s, ...options, store })
  const listener = await listenTcp(broker, { port: 0 })
  running = { broker, listener }
  return { broker, port: listener.address.port, store }
}

let nextAddress = 1
/** A plain connection logged in (CONNACK 0 asserted), from its own source address. */
async function plain (port: number, clientId: string, username = 'svc', password = 'svc-secret-1'): Promise<RawMqtt> {
  const c = new RawMqtt({ port, localAddress: `127.0.21.${nextAddress++}`, connect: { clientId, username, password: Buffer.from(password) } })
  open.push(c)
  expect(await c.connack).toBe(0)
  return c
}

let messageId = 1
function publish (c: RawMqtt, topic: string, payload: string | Buffer, qos: 0 | 1 | 2 = 1): number {
  const id = messageId++
  c.send({ cmd: 'publish', topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos, messageId: id, retain: false, dup: false })
  return id
}

const pubacks = (c: RawMqtt): number[] => c.packets.filter((p): p is Packet & { cmd: 'puback', messageId: number } => p.cmd === 'puback').map((p) => p.messageId)

async function readAll (store: EventStore, event: string, recipient: string | null = null): Promise<StoredEvent[]> {
  return await store.read({ event, after: 0, services: null, recipient, now: Date.now(), limit: 1000 })
}

/** A logger that keeps its warn lines. */
function recordingLogger (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const logger = { ...silentLogger, warn: (o: unknown, msg?: string) => { lines.push({ ...(o as object), msg }) } } as unknown as Logger
  return { logger, lines }
}

describe('plain MQTT ingest [PLAIN-INGEST-1..4]', () => {
  it('stores JSON, bytes, a null instance and a private event with ids mqtt-<seq>, and acknowledges each', async () => {
    const { port, store, broker } = await start()
    const c = await plain(port, 'boiler-dev')
    const ids = [
      publish(c, 'herald/v1/raise/readings', '{"t":21.5}'),
      publish(c, 'herald/v1/raise/readings', ' [1, 2]\n'),
      publish(c, 'herald/v1/raise/readings', 'hello'),
      publish(c, 'herald/v1/raise/readings', Buffer.from([0x7b, 0xff, 0x00])),
      publish(c, 'herald/v1/raise/temperature', '19'),
      publish(c, 'herald/v1/raise/temperature', ''),
      publish(c, 'herald/v1/raise/notices/alice/app', '"for alice"')
    ]
    await waitFor(() => pubacks(c).length === ids.length, 'every publish acknowledged')
    expect(pubacks(c)).toEqual(ids)
    const readings = await readAll(store, 'readings')
    expect(readings.map((e) => [`${e.instance}-${e.seq}`, e.payloadKind, Buffer.from(e.payload).toString('latin1')])).toEqual([
      ['mqtt-1', PayloadKind.json, '{"t":21.5}'],
      ['mqtt-2', PayloadKind.json, ' [1, 2]\n'],
      ['mqtt-3', PayloadKind.bytes, 'hello'],
      ['mqtt-4', PayloadKind.bytes, '{\xff\x00']
    ])
    const temperature = await readAll(store, 'temperature')
    expect(temperature.map((e) => [e.seq, e.isNull, e.payloadKind])).toEqual([[6, true, PayloadKind.none]])
    const notices = await readAll(store, 'notices', 'alice/app')
    expect(notices.map((e) => [e.seq, e.recipient, e.serviceId, e.instance])).toEqual([[7, 'alice/app', 'svc', INGEST_INSTANCE]])
    expect(broker.stats().ingest).toMatchObject({ accepted: 7, stored: 7, duplicates: 0, waitingBytes: 0, held: 0 })
    expect(broker.stats().perEvent.readings?.stored).toBe(4)
  })

  it('sends the PUBACK only once the store has committed the event', async () => {
    const s = await testSite()
    const gated = new GatedStore(s)
    const { port } = await start({ store: gated })
    const c = await plain(port, 'boiler-dev')
    publish(c, 'herald/v1/raise/readings', '1')
    await waitFor(() => gated.appends === 1, 'the append')
    // a round trip on another connection: the broker has had time to answer, had it not waited
    const other = await plain(port, 'other-dev')
    publish(other, 'herald/v1/raise/readings', '2')
    await waitFor(() => gated.appends === 2, 'the second append')
    expect(pubacks(c)).toEqual([])
    gated.release(1)
    await waitFor(() => pubacks(c).length === 1, 'the PUBACK after the commit')
    expect(pubacks(other)).toEqual([])
    gated.release()
    await waitFor(() => pubacks(other).length === 1, 'the second PUBACK')
  })

  it('a retried publish with a de-duplication key is stored once and acknowledged each time; private events take the key after the recipient', async () => {
    const { port, store, broker } = await start()
    const c = await plain(port, 'boiler-dev')
    const ids = [
      publish(c, 'herald/v1/raise/readings/k/abc-1', '1'),
      publish(c, 'herald/v1/raise/readings/k/abc-1', '1'),
      publish(c, 'herald/v1/raise/readings/k/abc-2', '2'),
      publish(c, 'herald/v1/raise/notices/alice/app/k/n-1', '3'),
      publish(c, 'herald/v1/raise/notices/alice/app/k/n-1', '3')
    ]
    await waitFor(() => pubacks(c).length === ids.length, 'every publish acknowledged')
    // a new connection of the same service, later: the key is still known
    const again = await plain(port, 'boiler-dev-2')
    publish(again, 'herald/v1/raise/readings/k/abc-1', '1')
    await waitFor(() => pubacks(again).length === 1, 'the retry acknowledged')
    expect((await readAll(store, 'readings')).map((e) => Buffer.from(e.payload).toString())).toEqual(['1', '2'])
    expect((await readAll(store, 'notices', 'alice/app')).length).toBe(1)
    expect(broker.stats().ingest).toMatchObject({ accepted: 6, stored: 3, duplicates: 3 })
    // one dedup record for the service, however many connections
    expect(store.lastSeq('svc', INGEST_INSTANCE)).toBe(6)
  })

  it('a device reconnecting in a loop adds no dedup record: one per service in the SQLite file, seqs going on', async () => {
    const s = await testSite()
    const dir = await tempDir('herald-ingest-')
    const path = join(dir.path, 'events.db')
    try {
      const { port } = await start({ store: await createSqliteEventStore({ path, limitsOf: (n) => s.events.get(n) }) })
      for (let i = 0; i < 20; i++) {
        const c = await plain(port, `looping-dev-${i}`)
        publish(c, 'herald/v1/raise/readings', String(i))
        await waitFor(() => pubacks(c).length === 1, 'the PUBACK')
        c.destroy()
        await c.closed
      }
      await running?.listener.close()
      await running?.broker.close()
      running = null
      const db = new Database(path, { readonly: true })
      expect(db.prepare('SELECT service, instance, last_seq FROM dedup').raw(true).all()).toEqual([['svc', INGEST_INSTANCE, 20]])
      expect(db.prepare('SELECT COUNT(*) FROM events').pluck().get()).toBe(20)
      db.close()
    } finally {
      await dir.remove()
    }
  })

  it('QoS 0 publishes are stored too (best effort: no PUBACK exists to promise anything)', async () => {
    const { port, store } = await start()
    const c = await plain(port, 'boiler-dev')
    publish(c, 'herald/v1/raise/readings', '"qos0"', 0)
    publish(c, 'herald/v1/raise/readings', '"qos1"', 1)
    await waitFor(() => pubacks(c).length === 1, 'the QoS 1 PUBACK')
    expect((await readAll(store, 'readings')).map((e) => Buffer.from(e.payload).toString())).toEqual(['"qos0"', '"qos1"'])
  })
})

describe('plain MQTT ingest: bad input [PLAIN-INGEST-5]', () => {
  it('each bad publish closes its connection unacknowledged, is counted per reason and logged naming the service; other connections go on', async () => {
    const { logger, lines } = recordingLogger()
    const { port, store, broker } = await start({ logger })
    const good = await plain(port, 'good-dev')
    publish(good, 'herald/v1/raise/readings', '"before"')
    await waitFor(() => pubacks(good).length === 1, 'the first good PUBACK')
    const cases: Array<[reason: string, topic: string, payload: string, qos: 0 | 1 | 2, login?: [string, string]]> = [
      ['notService', 'herald/v1/raise/readings', '1', 1, ['alice', 'alice-password']],
      ['unknownEvent', 'herald/v1/raise/nope', '1', 1],
      ['notAuthorized', 'herald/v1/raise/other', '1', 1],
      ['wrongCategory', 'herald/v1/raise/readings/alice/app', '1', 1],
      ['wrongCategory', 'herald/v1/raise/notices', '1', 1],
      ['payloadTooLarge', 'herald/v1/raise/readings', 'x'.repeat(1001), 1],
      ['invalidPayload', 'herald/v1/raise/readings', '', 1],
      ['malformedTopic', 'herald/v1/readings', '1', 1],
      ['malformedTopic', 'herald/v1/raise/readings/extra', '1', 1],
      ['malformedTopic', 'herald/v1/raise/readings/k/bad key', '1', 1],
      ['malformedTopic', 'herald/v1/raise/notices/alice/app/k', '1', 1],
      ['qos2', 'herald/v1/raise/readings', '1', 2]
    ]
    const expected: Record<string, number> = { notService: 0, malformedTopic: 0, unknownEvent: 0, notAuthorized: 0, wrongCategory: 0, payloadTooLarge: 0, invalidPayload: 0, qos2: 0, storeFailed: 0, keyLimit: 0 }
    for (const [reason, topic, payload, qos, login] of cases) {
      const c = login === undefined ? await plain(port, `bad-${reason}`) : await plain(port, `bad-${reason}`, ...login)
      publish(c, topic, payload, qos)
      await c.closed
      expect(c.packets.filter((p) => p.cmd !== 'connack')).toEqual([])
      expected[reason]!++
      expect(broker.stats().ingest.refused).toEqual(expected)
    }
    // one line per reason (rate-limited: the second of a reason within a second is left out), naming who
    const refusedLines = lines.filter((l) => String(l.msg).startsWith('plain MQTT publish refused'))
    expect(new Set(refusedLines.map((l) => l.reason))).toEqual(new Set(Object.keys(expected).filter((k) => expected[k]! > 0)))
    expect(refusedLines.find((l) => l.reason === 'unknownEvent')).toMatchObject({ service: 'svc', topic: 'herald/v1/raise/nope', code: 'UNKNOWN_EVENT' })
    expect(refusedLines.find((l) => l.reason === 'notService')).toMatchObject({ user: 'alice' })
    // counted per event name too, with the uplink's error codes
    expect(broker.stats().perEvent.readings?.refused).toMatchObject({ PAYLOAD_TOO_LARGE: 1, WRONG_CATEGORY: 1 })
    // the good connection was never touched
    publish(good, 'herald/v1/raise/readings', '"after"')
    await waitFor(() => pubacks(good).length === 2, 'the second good PUBACK')
    expect((await readAll(store, 'readings')).map((e) => Buffer.from(e.payload).toString())).toEqual(['"before"', '"after"'])
  })

  it('a publish whose commit fails closes the connection, unacknowledged, counted as storeFailed; the next one is stored', async () => {
    const s = await testSite()
    const gated = new GatedStore(s)
    gated.gated = false
    gated.failing = true
    const { port, broker } = await start({ store: gated })
    const c = await plain(port, 'boiler-dev')
    publish(c, 'herald/v1/raise/readings', '1')
    await c.closed
    expect(pubacks(c)).toEqual([])
    expect(broker.stats().ingest.refused.storeFailed).toBe(1)
    gated.failing = false
    const again = await plain(port, 'boiler-dev')
    publish(again, 'herald/v1/raise/readings', '1')
    await waitFor(() => pubacks(again).length === 1, 'the retry acknowledged')
    expect((await readAll(gated, 'readings')).map((e) => e.seq)).toEqual([2])
    expect(broker.stats().ingest.waitingBytes).toBe(0)
  })
})

describe('plain MQTT ingest: bounds [PLAIN-INGEST-6]', () => {
  it('publishes of one connection beyond maxIngestConnectionBytes wait for the commit of earlier ones, then go in order', async () => {
    const s = await testSite()
    const gated = new GatedStore(s)
    const { port, broker } = await start({ store: gated, maxIngestConnectionBytes: 1024 })
    const c = await plain(port, 'boiler-dev')
    const body = (n: number): string => `"${'x'.repeat(600)}${n}"`
    const ids = [1, 2, 3].map((n) => publish(c, 'herald/v1/raise/readings', body(n)))
    await waitFor(() => broker.stats().ingest.held === 2, 'two publishes held back')
    expect(gated.appends).toBe(1)
    expect(broker.stats().ingest.waitingBytes).toBe(3 * body(1).length)
    gated.release()
    await waitFor(() => gated.appends === 2 && broker.stats().ingest.held === 1, 'the next one appended after the commit')
    gated.gated = false
    gated.release()
    await waitFor(() => pubacks(c).length === 3, 'all acknowledged')
    expect(pubacks(c)).toEqual(ids)
    expect((await readAll(gated, 'readings')).map((e) => Buffer.from(e.payload).toString().slice(-2))).toEqual(['1"', '2"', '3"'])
    expect(broker.stats().ingest).toMatchObject({ waitingBytes: 0, held: 0 })
  })

  it('publishes beyond maxIngestPendingBytes in all wait, whichever connection sent them; a closed connection\'s held publishes are dropped', async () => {
    const s = await testSite()
    const gated = new GatedStore(s)
    const { port, broker } = await start({ store: gated, maxIngestConnectionBytes: 1024, maxIngestPendingBytes: 1024 })
    const a = await plain(port, 'dev-a')
    const b = await plain(port, 'dev-b')
    const d = await plain(port, 'dev-d')
    publish(a, 'herald/v1/raise/readings', 'x'.repeat(900))
    await waitFor(() => gated.appends === 1, 'the first append')
    publish(b, 'herald/v1/raise/readings', 'y'.repeat(900))
    publish(d, 'herald/v1/raise/readings', 'z'.repeat(900))
    await waitFor(() => broker.stats().ingest.held === 2, 'the others held back')
    d.destroy()
    await waitFor(() => broker.stats().ingest.held === 1, 'the closed connection\'s publish dropped')
    gated.gated = false
    gated.release()
    await waitFor(() => pubacks(a).length === 1 && pubacks(b).length === 1, 'both acknowledged')
    expect(gated.appends).toBe(2)
    expect(broker.stats().ingest).toMatchObject({ waitingBytes: 0, held: 0, accepted: 2 })
  })

  it('refuses bounds out of range with a ConfigError naming the option', async () => {
    const s = await testSite()
    const store = new MemoryEventStore({ limitsOf: (n) => s.events.get(n) })
    await expect(createBroker({ site: s, store, maxIngestConnectionBytes: 10 })).rejects.toThrow('maxIngestConnectionBytes')
    await expect(createBroker({ site: s, store, maxIngestConnectionBytes: 4096, maxIngestPendingBytes: 2048 })).rejects.toThrow('maxIngestPendingBytes')
  })
})

describe('plain MQTT ingest under a site reload [SITE-RELOAD-3..4]', () => {
  it('a service that loses an event has its next publish of it refused; a removed service\'s plain connections close; nothing acknowledged is lost', async () => {
    const { port, store, broker } = await start()
    const c = await plain(port, 'boiler-dev')
    const other = await plain(port, 'other-dev', 'svc2', 'svc2-secret-1')
    const first = publish(c, 'herald/v1/raise/readings', '1')
    await waitFor(() => pubacks(c).includes(first), 'the first publish acknowledged')
    const doc = (events: string[], services: Array<{ id: string, secret: string, events: string[] }>): Promise<Site> => parseSite({
      guests: true,
      events: [
        { name: 'temperature', category: 'replacing', access: 'everyone' },
        { name: 'readings', category: 'queueing', lifetime: '1d', maxQueueSize: 1000, maxPayload: 1000, access: 'authenticated' },
        { name: 'notices', category: 'private', lifetime: '1h', maxPerRecipient: 100, access: 'authenticated' },
        { name: 'other', category: 'queueing', lifetime: '1d', access: 'authenticated' }
      ].filter((e) => events.includes(e.name)),
      services,
      users: [{ name: 'alice', password: 'alice-password' }]
    })
    // svc may raise temperature only now; svc2 is gone
    broker.reloadSite(await doc(['temperature', 'readings', 'notices', 'other'], [{ id: 'svc', secret: 'svc-secret-1', events: ['temperature'] }]))
    await other.closed
    const allowed = publish(c, 'herald/v1/raise/temperature', '20')
    await waitFor(() => pubacks(c).includes(allowed), 'a raise still allowed acknowledged')
    const refused = publish(c, 'herald/v1/raise/readings', '2')
    await c.closed
    expect(pubacks(c)).not.toContain(refused)
    expect(broker.stats().ingest.refused.notAuthorized).toBe(1)
    expect((await readAll(store, 'readings')).map((e) => Buffer.from(e.payload).toString())).toEqual(['1'])
    expect((await readAll(store, 'temperature')).map((e) => Buffer.from(e.payload).toString())).toEqual(['20'])
    // and svc2 cannot log in again
    const again = new RawMqtt({ port, localAddress: '127.0.21.250', connect: { clientId: 'other-dev', username: 'svc2', password: Buffer.from('svc2-secret-1') } })
    open.push(again)
    expect(await again.connack).toBe(4)
  })
})

/**
 * The client endpoint's handler loop against a scripted broker: a TCP server on port 0 that speaks
 * just enough MQTT 3.1.1 (CONNACK, SUBACK, PUBLISH) to let a test put several EVENTS frames into ONE
 * TCP write, so that they reach the endpoint in one network read ([CLI-ORDER-2]).
 */
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { PayloadKind, decodeRequest, encodeControl, encodeEvents, type Request, type StoredEvent } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { ClientEndpoint } from './client-endpoint.js'
import { MemoryPositionStore } from './positions/memory-position-store.js'
import type { PositionStore, SubscriptionPosition } from './positions/position-store.js'
import { SqlitePositionStore } from './positions/sqlite-position-store.js'
import type { HeraldEvent } from './herald-event.js'

/** A broker that answers CONNECT and SUBSCRIBE, records REQUEST frames, and sends what the test says. */
class ScriptedBroker {
  readonly requests: Request[] = []
  #socket: Socket | null = null
  #replyTopic = ''
  private constructor (private readonly server: Server) {}

  static async listen (): Promise<ScriptedBroker> {
    const server = createServer()
    const b = new ScriptedBroker(server)
    server.on('connection', (s) => { b.#accept(s) })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return b
  }

  get url (): string {
    return `mqtt://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  #accept (s: Socket): void {
    this.#socket = s
    s.on('error', () => {})
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    parser.on('packet', (p: Packet) => {
      switch (p.cmd) {
        case 'connect':
          s.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }))
          break
        case 'subscribe':
          this.#replyTopic = p.subscriptions[0]?.topic ?? ''
          s.write(mqttPacket.generate({ cmd: 'suback', messageId: p.messageId ?? 0, granted: p.subscriptions.map(() => 0) }))
          break
        case 'publish': {
          const req = decodeRequest(p.payload as Buffer)
          this.requests.push(req)
          if (req.op === 'sub') this.send([encodeControl({ op: 'subscribed', sub: req.sub, category: 'queueing', head: 0, reset: false })])
          break
        }
        case 'pingreq':
          s.write(mqttPacket.generate({ cmd: 'pingresp' }))
          break
        default:
      }
    })
    s.on('data', (chunk: Buffer) => { parser.parse(chunk) })
  }

  /** Sends frames to the client's reply topic, as PUBLISH packets in ONE socket write. */
  send (frames: readonly Uint8Array[]): void {
    const socket = this.#socket
    if (socket === null) throw new Error('no client connected')
    socket.write(Buffer.concat(frames.map((payload) => mqttPacket.generate({ cmd: 'publish', topic: this.#replyTopic, payload: Buffer.from(payload), qos: 0, dup: false, retain: false }))))
  }

  /** The wire id of the subscription to `event`. */
  subOf (event: string): number {
    const r = this.requests.find((q) => q.op === 'sub' && q.event === event)
    if (r === undefined) throw new Error(`no subscription to ${event}`)
    return r.sub
  }

  /** The highest position the client acknowledged for a wire subscription. */
  acked (sub: number): number {
    return Math.max(0, ...this.requests.filter((r) => r.op === 'ack' && r.sub === sub).map((r) => (r as { position: number }).position))
  }

  async close (): Promise<void> {
    this.#socket?.destroy()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
  }
}

function stored (position: number): StoredEvent {
  return {
    position,
    serviceId: 'svc-a',
    instance: 'i-1',
    seq: position,
    name: 'readings',
    category: 'queueing',
    isNull: false,
    payloadKind: PayloadKind.json,
    payload: Buffer.from(JSON.stringify({ i: position })),
    raisedAt: 1,
    receivedAt: 2,
    expiresAt: null,
    uploadAge: 0,
    recipient: null
  }
}

/** `frames` EVENTS frames of `perFrame` events each, positions from 1 on. */
function eventsFrames (sub: number, frames: number, perFrame: number): Uint8Array[] {
  return Array.from({ length: frames }, (_, f) => encodeEvents(sub, 3, Array.from({ length: perFrame }, (_, i) => stored(f * perFrame + i + 1))))
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1)

describe('ClientEndpoint handler loop: several EVENTS frames in one network read ([CLI-ORDER-2])', () => {
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c()
  })

  /** Background failures of the endpoint under test: none is expected. */
  const errors: string[] = []
  async function setUp (): Promise<{ broker: ScriptedBroker, client: ClientEndpoint }> {
    errors.length = 0
    const broker = await ScriptedBroker.listen()
    closers.push(() => broker.close())
    const client = new ClientEndpoint({ url: broker.url, clientName: 'loop-test' }).start()
    client.on('error', (e) => { errors.push(`${e.code}: ${e.message}`) })
    closers.push(() => client.close())
    return { broker, client }
  }

  /** Waits until `count()` reaches `n`; the timeout says how many there were, and the errors. */
  async function handledAll (count: () => number, n: number): Promise<void> {
    await waitFor(() => count() >= n, `${n} events handled`).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; handled ${count()}; errors: ${errors.join('; ') || 'none'}`)
    })
  }

  it('transactional mode: every event of every frame is handled and committed, none waits for a next frame', async () => {
    const { broker, client } = await setUp()
    const dir = await tempDir('herald-loop-')
    closers.push(() => dir.remove())
    const db = new Database(join(dir.path, 'app.db'))
    closers.push(async () => { db.close() })
    db.exec('CREATE TABLE effects (position INTEGER PRIMARY KEY)')
    const insert = db.prepare('INSERT INTO effects (position) VALUES (?)')
    const handled: number[] = []
    await client.subscribe('readings', { transaction: db }, (e) => { insert.run(e.position); handled.push(e.position) })
    const sub = broker.subOf('readings')

    broker.send(eventsFrames(sub, 3, 5)) // 15 events in 3 frames, one write
    await handledAll(() => handled.length, 15)
    await waitFor(() => broker.acked(sub) === 15, 'the ack of position 15')
    expect(handled).toEqual(range(15))
    expect(errors).toEqual([])
    expect(db.prepare('SELECT position FROM effects ORDER BY position').pluck().all()).toEqual(range(15))
  })

  it('[CLI-REPLAY-1] transactional mode: reset writes the position in the application\'s database, resubscribes from it, and flags the replay', async () => {
    const { broker, client } = await setUp()
    const dir = await tempDir('herald-loop-')
    closers.push(() => dir.remove())
    const db = new Database(join(dir.path, 'app.db'))
    closers.push(async () => { db.close() })
    const handled: Array<[number, boolean]> = []
    const sub = await client.subscribe('readings', { transaction: db }, (e) => { handled.push([e.position, e.replay]) })
    const first = broker.subOf('readings')
    broker.send(eventsFrames(first, 1, 8))
    await handledAll(() => handled.length, 8)
    await sub.reset({ position: 6 })
    await waitFor(() => broker.requests.filter((r) => r.op === 'sub').length === 2, 'the subscription sent again')
    const again = broker.requests.filter((r) => r.op === 'sub').at(-1) as Extract<Request, { op: 'sub' }>
    expect(again).toMatchObject({ event: 'readings', position: 5, start: 'all' })
    expect(again.sub).not.toBe(first)
    expect(broker.requests.some((r) => r.op === 'unsub' && r.sub === first)).toBe(true)
    expect(new SqlitePositionStore({ database: db }).get('readings')?.position).toBe(5)
    // a late frame of the old subscription is ignored; the new one replays 6..8, then 9 is new
    broker.send([encodeEvents(first, 3, [stored(9)]), encodeEvents(again.sub, 3, [6, 7, 8, 9].map(stored))])
    await handledAll(() => handled.length, 12)
    expect(handled.slice(8)).toEqual([[6, true], [7, true], [8, true], [9, false]])
    expect(sub.replaying).toBe(false)
    // a broker-resolved start goes with position 0 and that start (the broker's head is recorded on its answer)
    await sub.reset('new')
    await waitFor(() => broker.requests.filter((r) => r.op === 'sub').length === 3, 'the subscription sent again')
    expect(broker.requests.filter((r) => r.op === 'sub').at(-1)).toMatchObject({ position: 0, start: 'new' })
  })

  it('default mode with an async handler: every event of every frame is handled in order', async () => {
    const { broker, client } = await setUp()
    const handled: HeraldEvent[] = []
    await client.subscribe('readings', {}, async (e) => {
      await Promise.resolve()
      handled.push(e)
    })
    const sub = broker.subOf('readings')
    broker.send(eventsFrames(sub, 3, 5))
    await handledAll(() => handled.length, 15)
    await waitFor(() => broker.acked(sub) === 15, 'the ack of position 15')
    expect(handled.map((e) => e.position)).toEqual(range(15))
    expect(handled.map((e) => e.payload)).toEqual(range(15).map((i) => ({ i })))
    expect(errors).toEqual([])
  })

  it('default mode with a synchronous handler: every event of every frame is handled in order', async () => {
    const { broker, client } = await setUp()
    const handled: number[] = []
    await client.subscribe('readings', {}, (e) => { handled.push(e.position) })
    const sub = broker.subOf('readings')
    broker.send(eventsFrames(sub, 4, 3))
    await handledAll(() => handled.length, 12)
    await waitFor(() => broker.acked(sub) === 12, 'the ack of position 12')
    expect(handled).toEqual(range(12))
    expect(errors).toEqual([])
  })

  it('[CLI-REDELIVER-1] a range flagged from an earlier run stays flagged in the next run when the handler catches up in the middle of it', async () => {
    // a crash (or, after a power loss, the reservation) left position 0 with started 10: events 1..10
    // may have been handled. This run handles 1..3, its queue runs empty (one commit), and it dies.
    const dir = await tempDir('herald-loop-')
    closers.push(() => dir.remove())
    const file = join(dir.path, 'positions.db')
    const before = new SqlitePositionStore({ database: file, bootId: 'b' })
    before.advance('readings', 0, 10)
    before.close()
    const runs: HeraldEvent[][] = []
    for (const [from, to] of [[1, 3], [4, 12]] as const) {
      const broker = await ScriptedBroker.listen()
      const positions = new SqlitePositionStore({ database: file, bootId: 'b' }) // the same boot: a process crash
      const client = new ClientEndpoint({ url: broker.url, clientName: 'loop-test', positions }).start()
      const handled: HeraldEvent[] = []
      runs.push(handled)
      await client.subscribe('readings', {}, (e) => { handled.push(e) })
      const sub = broker.subOf('readings')
      broker.send([encodeEvents(sub, 3, Array.from({ length: to - from + 1 }, (_, i) => stored(from + i)))])
      await handledAll(() => handled.length, to - from + 1)
      await waitFor(() => broker.acked(sub) === to, `the ack of position ${to}`)
      await client.close()
      positions.close()
      await broker.close()
    }
    expect(runs.map((r) => r.map((e) => [e.position, e.redelivered]))).toEqual([
      [[1, true], [2, true], [3, true]],
      [[4, true], [5, true], [6, true], [7, true], [8, true], [9, true], [10, true], [11, false], [12, false]]
    ])
  })
})

/**
 * An asynchronous store (as IndexedDB): memory answers `get` at once, a write is "on disk" only
 * when its promise resolves, some turns later, in the order made.
 */
class SlowAsyncStore implements PositionStore {
  readonly durable = true
  readonly disk = new Map<string, { position: number, started: number | null }>()
  private readonly memory = new MemoryPositionStore()
  private chain: Promise<void> = Promise.resolve()
  private later (key: string): Promise<void> {
    const snapshot = this.memory.get(key)
    this.chain = this.chain.then(() => new Promise<void>((resolve) => {
      setTimeout(() => {
        if (snapshot !== null) this.disk.set(key, { ...snapshot })
        resolve()
      }, 2)
    }))
    return this.chain
  }

  get (key: string): SubscriptionPosition | null { return this.memory.get(key) }
  markStarted (key: string, position: number): Promise<void> { this.memory.markStarted(key, position); return this.later(key) }
  commit (key: string, position: number): Promise<void> { this.memory.commit(key, position); return this.later(key) }
  advance (key: string, committed: number, started: number): Promise<void> { this.memory.advance(key, committed, started); return this.later(key) }
  async close (): Promise<void> { await this.chain }
}

describe('ClientEndpoint on an asynchronous position store ([CLI-BROWSER-2])', () => {
  it('waits for the start mark before each handler, for the first position before subscribe() resolves, and for every write at close', async () => {
    const broker = await ScriptedBroker.listen()
    const positions = new SlowAsyncStore()
    const client = new ClientEndpoint({ url: broker.url, clientName: 'async-store', positions }).start()
    const errors: string[] = []
    client.on('error', (e) => { errors.push(e.message) })
    await client.subscribe('readings', {}, (e) => {
      // on disk before the handler runs: a reload now flags this event, never loses or repeats it silently
      const d = positions.disk.get('readings')
      if (d === undefined || d.started === null || d.started < e.position || d.position >= e.position) errors.push(`event ${e.position}: on disk ${JSON.stringify(d)}`)
      handled.push(e.position)
    })
    const handled: number[] = []
    // [CLI-START-1] the start position is on disk once subscribe() resolved
    expect(positions.disk.get('readings')).toEqual({ position: 0, started: null })
    const sub = broker.subOf('readings')
    broker.send(eventsFrames(sub, 3, 4))
    await waitFor(() => handled.length >= 12, '12 events handled')
    await client.close()
    expect(handled).toEqual(range(12))
    expect(errors).toEqual([])
    expect(positions.disk.get('readings')).toEqual({ position: 12, started: null })
    await broker.close()
  })
})

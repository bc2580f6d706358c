/**
 * Batches ([CLI-BATCH-*]) and concurrent handlers ([CLI-CONC-*]) with a MemoryTransport (the test
 * plays the broker), a ManualClock and a MemoryPositionStore: what a batch holds and when it is
 * handed over (a quiet producer after a burst does not stall a partial batch), the one write before
 * and after it, the redelivery of an unfinished batch, the fallback to one event at a time before
 * dead letters; concurrency's per-key order, its limit, the low-water position with the finished
 * events recorded above it, and what a restart redelivers.
 */
import { describe, expect, it } from 'vitest'
import { ConfigError, ManualClock, PayloadKind, encodeControl, encodeEvents, utf8Encode, type HeraldError, type Request, type StoredEvent } from '@herald/protocol'
import { MemoryTransport } from '@herald/protocol/testing'
import { ClientEndpoint, type BatchSubscribeOptions, type SubscribeOptions } from '../client-endpoint.js'
import type { EventHandler } from '../client-subscription.js'
import type { HeraldEvent } from '../herald-event.js'
import { MemoryPositionStore } from '../positions/memory-position-store.js'
import type { PositionStore } from '../positions/position-store.js'
import { sequencer, type BatchHandler } from './delivery-options.js'

async function flush (): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve()
}

function stored (position: number, device = 'd0', serviceId = 'svc'): StoredEvent {
  return {
    position, serviceId, instance: 'inst', seq: position, name: 'log', category: 'queueing',
    raisedAt: 1_000, receivedAt: 1_000, expiresAt: null, uploadAge: 0, isNull: false, recipient: null,
    payloadKind: PayloadKind.json, payload: utf8Encode(JSON.stringify({ n: position, device }))
  }
}

type SubRequest = Extract<Request, { op: 'sub' }>

/** A store that counts its writes. */
function counting (inner: MemoryPositionStore): { store: PositionStore, writes: string[] } {
  const writes: string[] = []
  const store: PositionStore = {
    durable: false,
    deadLetters: inner.deadLetters,
    get: (k) => inner.get(k),
    markStarted: (k, p) => { writes.push(`started ${p}`); inner.markStarted(k, p) },
    commit: (k, p) => { writes.push(`commit ${p}`); inner.commit(k, p) },
    advance: (k, c, s) => { writes.push(`advance ${c} ${s}`); inner.advance(k, c, s) },
    settle: (k, c, s, d) => { writes.push(`settle ${c} ${String(s)} [${d.join(',')}]`); inner.settle(k, c, s, d) },
    close: () => {}
  }
  return { store, writes }
}

function client (positions: PositionStore, clock = new ManualClock()) {
  const transport = new MemoryTransport()
  const ep = new ClientEndpoint({ url: 'mqtt://broker.invalid:1883', clientName: 'app', user: 'alice', password: 'alice-password-1', positions, transport, clock, random: () => 0.5, retryInitialMs: 100, retryMaxMs: 800 })
  const errors: HeraldError[] = []
  ep.on('error', (e) => { errors.push(e) })
  const subRequest = (): SubRequest => {
    const subs = transport.last.requests().filter((r): r is SubRequest => r.op === 'sub')
    return subs[subs.length - 1] as SubRequest
  }
  const open = async (): Promise<void> => {
    ep.start()
    transport.last.open()
    await flush()
  }
  const accept = async (): Promise<void> => {
    await flush()
    transport.last.inject(encodeControl({ op: 'subscribed', sub: subRequest().sub, category: 'queueing', head: 0, reset: false }))
    await flush()
  }
  return {
    ep, clock, errors,
    batch: async (options: BatchSubscribeOptions, handler: BatchHandler) => {
      await open()
      const p = ep.subscribe('log', options, handler)
      await accept()
      return await p
    },
    one: async (options: SubscribeOptions, handler: EventHandler) => {
      await open()
      const p = ep.subscribe('log', options, handler)
      await accept()
      return await p
    },
    deliver: async (events: StoredEvent[]) => {
      transport.last.inject(encodeEvents(subRequest().sub, clock.now(), events))
      await flush()
    }
  }
}

const at = (ps: number[]): StoredEvent[] => ps.map((p) => stored(p))
const positionsOf = (es: HeraldEvent[]): number[] => es.map((e) => e.position)

describe('batches (memory transport, manual clock)', () => {
  it('hands over up to maxEvents in order with one started mark before and one commit after; a partial batch goes after maxWaitMs when the producer goes quiet [CLI-BATCH-1] [CLI-BATCH-2] [CLI-BATCH-3]', async () => {
    const { store, writes } = counting(new MemoryPositionStore())
    const c = client(store)
    const batches: number[][] = []
    const sub = await c.batch({ batch: { maxEvents: 3, maxWaitMs: 500 }, window: 10 }, (es) => { batches.push(positionsOf(es)) })
    expect(writes.splice(0)).toEqual(['commit 0']) // where it starts [CLI-START-1]
    await c.deliver(at([1, 2, 3, 4, 5]))
    expect(batches).toEqual([[1, 2, 3]])
    expect(writes).toEqual(['started 3', 'commit 3'])
    // the burst ended: 4 and 5 wait for more, until maxWaitMs after 4 arrived, then go as they are
    c.clock.advance(499)
    await flush()
    expect(batches).toEqual([[1, 2, 3]])
    c.clock.advance(1)
    await flush()
    expect(batches).toEqual([[1, 2, 3], [4, 5]])
    expect(writes).toEqual(['started 3', 'commit 3', 'started 5', 'commit 5'])
    expect([sub.position, sub.delivered]).toEqual([5, 5])
    // an event arriving while a partial batch waits joins it; a full one goes at once
    await c.deliver(at([6]))
    c.clock.advance(100)
    await flush()
    await c.deliver(at([7, 8]))
    expect(batches.at(-1)).toEqual([6, 7, 8])
    expect(c.clock.pendingTimers).toBe(0)
    expect(c.errors).toEqual([])
    await c.ep.close()
  })

  it('a crash mid-batch redelivers the whole batch flagged, and only it [CLI-BATCH-2]', async () => {
    const positions = new MemoryPositionStore()
    const c1 = client(positions)
    await c1.batch({ batch: { maxEvents: 4, maxWaitMs: 0 } }, async (es) => { if (es[0]?.position === 5) await new Promise(() => {}) })
    await c1.deliver(at([1, 2, 3, 4]))
    await c1.deliver(at([5, 6, 7]))
    expect(positions.get('log')).toEqual({ position: 4, started: 7 }) // the process "dies" here
    const c2 = client(positions)
    const seen: Array<[number, boolean]> = []
    await c2.batch({ batch: { maxEvents: 4, maxWaitMs: 0 } }, (es) => { for (const e of es) seen.push([e.position, e.redelivered]) })
    await c2.deliver(at([5, 6, 7, 8]))
    await c2.deliver(at([9]))
    expect(seen).toEqual([[5, true], [6, true], [7, true], [8, false], [9, false]])
    expect(positions.get('log')).toEqual({ position: 9, started: null })
    await c2.ep.close()
  })

  it('a batch failing its last attempt is handed over one event at a time: only the failing event is dead-lettered [CLI-BATCH-5]', async () => {
    const positions = new MemoryPositionStore()
    const c = client(positions)
    const calls: Array<Array<[number, boolean]>> = []
    const sub = await c.batch({ batch: { maxEvents: 3, maxWaitMs: 0 }, maxAttempts: 2, backoff: { initialMs: 10, maxMs: 10 } }, (es) => {
      calls.push(es.map((e) => [e.position, e.redelivered]))
      if (es.some((e) => e.position === 2)) throw new Error('poison 2')
    })
    await c.deliver(at([1, 2, 3]))
    c.clock.advance(10)
    await flush()
    c.clock.advance(10)
    await flush()
    expect(calls).toEqual([
      [[1, false], [2, false], [3, false]], [[1, true], [2, true], [3, true]], // the batch, twice
      [[1, true]], [[2, true]], [[2, true]], [[3, true]] // then one at a time: 2 fails twice
    ])
    expect(positions.deadLetters.list().map((l) => l.event.position)).toEqual([2])
    expect([sub.position, sub.delivered, sub.deadLettered]).toEqual([3, 2, 1])
    expect(positions.get('log')).toEqual({ position: 3, started: null })
    await c.ep.close()
  })

  it('refuses bad batch options with a ConfigError naming them, and a window below maxEvents naming both [CLI-BATCH-6]', async () => {
    const c = client(new MemoryPositionStore())
    c.ep.start()
    const bad: Array<[object, RegExp]> = [
      [{ batch: { maxEvents: 0, maxWaitMs: 10 } }, /batch\.maxEvents/], [{ batch: { maxEvents: 10_001, maxWaitMs: 10 }, window: 20_000 }, /batch\.maxEvents/],
      [{ batch: { maxEvents: 10, maxWaitMs: 60_001 } }, /batch\.maxWaitMs/], [{ batch: { maxEvents: 10 } }, /batch\.maxWaitMs/],
      [{ batch: 5 }, /"batch"/], [{ batch: { maxEvents: 100, maxWaitMs: 10 }, window: 50 }, /"batch\.maxEvents" \(100\).*"window" \(50\)/],
      [{ batch: { maxEvents: 10, maxWaitMs: 10 }, concurrency: 2 }, /"concurrency".*"batch"/]
    ]
    for (const [options, re] of bad) {
      const err = await c.ep.subscribe('log', options as BatchSubscribeOptions, () => {}).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toMatch(re)
    }
    await c.ep.close()
  })
})

describe('concurrent handlers (memory transport, manual clock)', () => {
  /** Handlers that finish when the test says so. */
  function gated () {
    const running = new Map<number, () => void>()
    const log: Array<[string, number, boolean]> = []
    let max = 0
    const handler: EventHandler = (e) => {
      log.push([(e.payload as { device: string }).device, e.position, e.redelivered])
      return new Promise<void>((resolve) => {
        running.set(e.position, () => { running.delete(e.position); resolve() })
        max = Math.max(max, running.size)
      })
    }
    const finish = async (...ps: number[]): Promise<void> => {
      for (const p of ps) {
        const f = running.get(p)
        if (f === undefined) throw new Error(`event ${p} is not running`)
        f()
      }
      await flush()
    }
    return { handler, running, log, finish, max: () => max }
  }

  it('runs up to N at once, one at a time per sequencing key in position order; the position is the low-water mark with the finished events above it [CLI-CONC-1] [CLI-CONC-2] [CLI-CONC-3]', async () => {
    const positions = new MemoryPositionStore()
    const c = client(positions)
    const g = gated()
    const sub = await c.one({ concurrency: 2, sequence: { field: 'device' } }, g.handler)
    await c.deliver([stored(1, 'a'), stored(2, 'a'), stored(3, 'b'), stored(4, 'c')])
    expect([...g.running.keys()]).toEqual([1, 3]) // 2 waits behind 1 (same device); 4 waits for a slot
    await g.finish(3)
    expect([...g.running.keys()]).toEqual([1, 4])
    c.clock.runDeferred()
    expect(positions.get('log')).toEqual({ position: 0, started: 4, done: [3] })
    expect(sub.position).toBe(0)
    await g.finish(1)
    expect([...g.running.keys()]).toEqual([4, 2])
    c.clock.runDeferred()
    expect(positions.get('log')).toEqual({ position: 1, started: 4, done: [3] })
    await g.finish(2, 4)
    c.clock.runDeferred()
    expect(positions.get('log')).toEqual({ position: 4, started: null })
    expect(g.log.map(([d, p]) => `${d}${p}`)).toEqual(['a1', 'b3', 'c4', 'a2'])
    expect(g.max()).toBe(2)
    expect([sub.position, sub.delivered]).toEqual([4, 4])
    await c.ep.close()
  })

  it('after a crash: finished events above the position are not delivered again; the unfinished ones are, flagged; nothing is skipped [CLI-CONC-3]', async () => {
    const positions = new MemoryPositionStore()
    const c1 = client(positions)
    const g1 = gated()
    await c1.one({ concurrency: 3, sequence: { field: 'device' } }, g1.handler)
    await c1.deliver([stored(1, 'a'), stored(2, 'b'), stored(3, 'c'), stored(4, 'a')])
    await g1.finish(2, 3)
    c1.clock.runDeferred()
    expect(positions.get('log')).toEqual({ position: 0, started: 3, done: [2, 3] }) // "dies" with 1 running, 4 waiting behind it
    const c2 = client(positions)
    const seen: Array<[number, boolean]> = []
    await c2.one({ concurrency: 3, sequence: { field: 'device' } }, (e) => { seen.push([e.position, e.redelivered]) })
    await c2.deliver([stored(1, 'a'), stored(2, 'b'), stored(3, 'c'), stored(4, 'a'), stored(5, 'b')])
    c2.clock.runDeferred()
    expect(seen.sort((x, y) => x[0] - y[0])).toEqual([[1, true], [4, false], [5, false]])
    expect(positions.get('log')).toEqual({ position: 5, started: null })
    await c2.ep.close()
  })

  it('with maxAttempts, the failing event is dead-lettered with the position record counting it finished, the others go on [CLI-CONC-5]', async () => {
    const positions = new MemoryPositionStore()
    const c = client(positions)
    const sub = await c.one({ concurrency: 4, maxAttempts: 2, backoff: { initialMs: 10, maxMs: 10 } }, (e) => { if (e.position === 2) throw new Error('poison') })
    await c.deliver([stored(1, 'a', 's1'), stored(2, 'a', 's2'), stored(3, 'a', 's3')])
    c.clock.advance(10)
    await flush()
    c.clock.runDeferred()
    expect(positions.deadLetters.list().map((l) => l.event.position)).toEqual([2])
    expect(positions.get('log')).toEqual({ position: 3, started: null })
    expect([sub.delivered, sub.deadLettered]).toEqual([2, 1])
    await c.ep.close()
  })

  it('refuses concurrency with transactional mode, a bad concurrency or sequence, and a store without settle, with a ConfigError [CLI-CONC-4]', async () => {
    const inner = new MemoryPositionStore()
    const noSettle: PositionStore = { durable: false, get: (k) => inner.get(k), markStarted: (k, p) => { inner.markStarted(k, p) }, commit: (k, p) => { inner.commit(k, p) }, advance: (k, c, s) => { inner.advance(k, c, s) }, close: () => {} }
    const c = client(noSettle)
    c.ep.start()
    const bad: Array<[object, RegExp]> = [
      [{ concurrency: 0 }, /"concurrency"/], [{ concurrency: 257 }, /"concurrency"/], [{ concurrency: 1.5 }, /"concurrency"/],
      [{ concurrency: 2, sequence: 'device' }, /"sequence"/], [{ sequence: { field: '' } }, /"sequence"/],
      [{ concurrency: 2 }, /records finished events/], [{ concurrency: 2, transaction: {} }, /"transaction"/]
    ]
    for (const [options, re] of bad) {
      const err = await c.ep.subscribe('log', options as SubscribeOptions, () => {}).catch((e: unknown) => e)
      expect(err, JSON.stringify(options)).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toMatch(re)
    }
    await c.ep.close()
  })
})

describe('concurrent handlers across several crashes', () => {
  it('finished events recorded by an earlier run stay recorded while a later run has not reached them [CLI-CONC-3]', async () => {
    const positions = new MemoryPositionStore()
    positions.settle('log', 0, 6, [3, 5]) // an earlier run: 1, 2, 4, 6 may have started, 3 and 5 finished
    const c = client(positions)
    const running: Array<() => void> = []
    const seen: number[] = []
    await c.one({ concurrency: 1 }, (e) => { seen.push(e.position); return new Promise<void>((resolve) => { running.push(resolve) }) })
    await c.deliver(at([1, 2, 3, 4, 5, 6]))
    expect(seen).toEqual([1])
    expect(positions.get('log')).toEqual({ position: 0, started: 6, done: [3, 5] })
    running.shift()?.()
    await flush()
    c.clock.runDeferred()
    expect(positions.get('log')).toEqual({ position: 1, started: 6, done: [3, 5] }) // a crash now still skips 3 and 5
    for (let k = 0; k < 3; k++) {
      running.shift()?.()
      await flush()
    }
    c.clock.runDeferred()
    expect(seen).toEqual([1, 2, 4, 6])
    expect(positions.get('log')).toEqual({ position: 6, started: null })
    await c.ep.close()
  })
})

describe('a reset with concurrency', () => {
  it('forgets the finished events an earlier run recorded: the replay delivers them [CLI-CONC-3] [CLI-REPLAY-1]', async () => {
    const positions = new MemoryPositionStore()
    positions.settle('log', 0, 3, [2, 3])
    const c = client(positions)
    const seen: Array<[number, boolean]> = []
    const sub = await c.one({ concurrency: 2 }, (e) => { seen.push([e.position, e.replay]) })
    await c.deliver(at([1])) // 2 and 3 not received yet when reset
    c.clock.runDeferred()
    expect(seen).toEqual([[1, false]])
    expect(positions.get('log')).toEqual({ position: 1, started: 3, done: [2, 3] })
    await sub.reset('all')
    expect(positions.get('log')).toEqual({ position: 0, started: null })
    await flush()
    await c.deliver(at([1, 2, 3]))
    expect(seen.slice(1).sort((x, y) => x[0] - y[0])).toEqual([[1, true], [2, false], [3, false]]) // replay: up to the position when reset ([CLI-REPLAY-2])
    await c.ep.close()
  })
})

describe('subscribe() types and sequencing keys', () => {
  it('a batch handler takes an array, a plain one an event: the other way round does not compile [CLI-BATCH-1]', () => {
    const ep = client(new MemoryPositionStore()).ep
    // checked by tsc (tsconfig.check.json), never run: a subscription would wait for a broker
    const compileOnly = (): void => {
      void ep.subscribe('log', { batch: { maxEvents: 2, maxWaitMs: 0 } }, (es: HeraldEvent[]) => { void es.length })
      void ep.subscribe('log', {}, (e: HeraldEvent) => { void e.position })
      // @ts-expect-error a handler of one event with `batch`
      void ep.subscribe('log', { batch: { maxEvents: 2, maxWaitMs: 0 } }, (e: HeraldEvent) => { void e.position })
      // @ts-expect-error a batch handler without `batch`
      void ep.subscribe('log', {}, (es: HeraldEvent[]) => { void es.length })
    }
    expect(typeof compileOnly).toBe('function')
  })

  it("'key' sequences by the replacing key (the service without one), { field } by a payload field (the service without it) [CLI-CONC-2]", () => {
    const keyOf = sequencer('key')
    const fieldOf = sequencer({ field: 'device' })
    const serviceOf = sequencer(undefined)
    const keyed = { ...stored(1, 'd1', 'svc-a'), key: 'room-1' } as StoredEvent
    expect([keyOf(keyed), keyOf(stored(2, 'd1', 'svc-a'))]).toEqual(['k:room-1', 's:svc-a'])
    const noField = { ...stored(3), payload: utf8Encode(JSON.stringify({ n: 3 })) }
    const notObject = { ...stored(4), payload: utf8Encode('[1,2]') }
    expect([fieldOf(stored(1, 'd1')), fieldOf(stored(2, 'd2')), fieldOf(noField), fieldOf(notObject)]).toEqual(['f:d1', 'f:d2', 's:svc', 's:svc'])
    expect(serviceOf(stored(1, 'd1', 'svc-b'))).toBe('svc-b')
  })
})

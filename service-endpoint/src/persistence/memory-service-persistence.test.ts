import { describe, expect, it } from 'vitest'
import { ClosedError, ConfigError, eventSize, type RaisedEvent } from '@herald/protocol'
import { describeServicePersistenceConformance, sizedEvent } from '../testing/index.js'
import { MemoryServicePersistence } from './memory-service-persistence.js'
import type { MemoryServicePersistenceOptions } from './memory-service-persistence.js'

describeServicePersistenceConformance('memory', async ({ capacityBytes, policy }) => ({
  persistence: new MemoryServicePersistence({ capacityBytes, policy }),
  cleanup: async () => {}
}))

describe('MemoryServicePersistence', () => {
  it('agrees with a plain array model over 20,000 random operations (holes, compaction)', async () => {
    const p = new MemoryServicePersistence({ capacityBytes: 40_000, policy: 'dropOldest' })
    let model: RaisedEvent[] = []
    let seq = 0
    let state = 12345
    const rand = (n: number): number => { state = (state * 1_103_515_245 + 12_345) % 2_147_483_648; return state % n }
    for (let step = 0; step < 20_000; step++) {
      const r = rand(100)
      if (r < 55) {
        const events = Array.from({ length: 1 + rand(4) }, () => sizedEvent(seq += 1 + rand(3), 60 + rand(200)))
        const supersede = model.length > 0 && rand(4) === 0 ? [model[rand(model.length)]?.seq ?? 0] : []
        const outcome = await p.append(events, supersede)
        model = model.filter((e) => !supersede.includes(e.seq))
        const dropped: RaisedEvent[] = []
        const newBytes = events.reduce((n, e) => n + eventSize(e), 0)
        while (model.reduce((n, e) => n + eventSize(e), 0) + newBytes > 40_000) dropped.push(model.shift() as RaisedEvent)
        expect(outcome.dropped.map((e) => e.seq)).toEqual(dropped.map((e) => e.seq))
        model.push(...events)
      } else if (r < 70) {
        const upTo = (model[0]?.seq ?? seq) + rand(20)
        await p.acknowledge(upTo)
        model = model.filter((e) => e.seq > upTo)
      } else if (r < 85) {
        const seqs = Array.from({ length: 1 + rand(5) }, () => model[rand(model.length)]?.seq ?? -1)
        await p.remove(seqs)
        model = model.filter((e) => !seqs.includes(e.seq))
      } else {
        const after = model.length > 0 ? (model[rand(model.length)]?.seq ?? 0) - rand(2) : 0
        const limit = rand(30)
        expect((await p.read(after, limit)).map((e) => e.seq)).toEqual(model.filter((e) => e.seq > after).slice(0, limit).map((e) => e.seq))
      }
      expect(p.stats().count).toBe(model.length)
      expect(p.stats().bytes).toBe(model.reduce((n, e) => n + eventSize(e), 0))
    }
    expect((await p.read(0, 1_000_000)).map((e) => e.seq)).toEqual(model.map((e) => e.seq))
  })

  it('acknowledges a long backlog in O(1) amortized steps', async () => {
    const p = new MemoryServicePersistence()
    const n = 200_000
    const started = performance.now()
    for (let s = 1; s <= n; s += 100) await p.append(Array.from({ length: 100 }, (_, i) => sizedEvent(s + i)))
    for (let s = 1; s <= n; s++) await p.acknowledge(s)
    expect(p.stats()).toEqual({ count: 0, bytes: 0, capacityBytes: 64 * 1024 * 1024, durable: false })
    expect(p.lastSeq()).toBe(n)
    // O(n^2) shifting would take minutes; this takes well under a second
    expect(performance.now() - started).toBeLessThan(10_000)
  })

  it('checks its options and rejects calls once closed', async () => {
    expect(() => new MemoryServicePersistence({ capacityBytes: -1 })).toThrow(ConfigError)
    expect(() => new MemoryServicePersistence({ policy: 'dropNewest' as 'reject' })).toThrow(/policy/)
    expect(() => new MemoryServicePersistence({ size: 1 } as MemoryServicePersistenceOptions)).toThrow(/size/)
    expect(new MemoryServicePersistence({ instance: 'abc' }).instance).toBe('abc')
    const p = new MemoryServicePersistence()
    await p.close()
    await p.close()
    await expect(p.append([sizedEvent(1)])).rejects.toBeInstanceOf(ClosedError)
  })
})

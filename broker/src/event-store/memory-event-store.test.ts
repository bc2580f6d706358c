import { describe, it, expect } from 'vitest'
import { Category, PayloadKind } from '@herald/protocol'
import { describeEventStoreConformance } from '../testing/index.js'
import { MemoryEventStore } from './memory-event-store.js'

describeEventStoreConformance('MemoryEventStore', async (limitsOf, options) => ({
  store: new MemoryEventStore({ limitsOf, ...options }),
  cleanup: async () => {}
}), { durable: false })

describe('MemoryEventStore', () => {
  it('keeps each store to itself: a second store starts empty', async () => {
    const limitsOf = (): { category: Category, lifetimeMs: null, maxQueueSize: number, maxPerRecipient: number } => ({ category: Category.queueing, lifetimeMs: null, maxQueueSize: 10, maxPerRecipient: 1 })
    const a = new MemoryEventStore({ limitsOf })
    await a.append({ serviceId: 's', instance: 'i', handledUpTo: 1, receivedAt: 1, events: [{ seq: 1, name: 'e', category: Category.queueing, raisedAt: 1, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('1') }] })
    const b = new MemoryEventStore({ limitsOf })
    expect([a.head(), a.count(), a.lastSeq('s', 'i')]).toEqual([1, 1, 1])
    expect([b.head(), b.count(), b.lastSeq('s', 'i')]).toEqual([0, 0, 0])
  })
})

import { describe, it, expect } from 'vitest'
import { describePositionStoreConformance } from '../testing/position-store-conformance.js'
import { describeDeadLetterStoreConformance } from '../testing/dead-letter-store-conformance.js'
import { MemoryPositionStore } from './memory-position-store.js'

describePositionStoreConformance('memory', async () => ({ store: new MemoryPositionStore(), cleanup: async () => {} }))

describe('MemoryPositionStore', () => {
  it('is not durable, and forgets everything at close', () => {
    const store = new MemoryPositionStore()
    store.commit('a', 5)
    expect(store.durable).toBe(false)
    store.close()
    expect(store.get('a')).toBeNull()
  })
})

describeDeadLetterStoreConformance('memory', async (maxDeadLetters) => ({ store: new MemoryPositionStore({ maxDeadLetters }), cleanup: async () => {} }))

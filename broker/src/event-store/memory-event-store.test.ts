import { describeEventStoreConformance } from '../testing/index.js'
import { MemoryEventStore } from './memory-event-store.js'

describeEventStoreConformance('MemoryEventStore', async (limitsOf) => ({
  store: new MemoryEventStore({ limitsOf }),
  cleanup: async () => {}
}), { durable: false })

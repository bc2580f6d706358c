import { describePositionStoreConformance } from '../testing/position-store-conformance.js'
import { MemoryPositionStore } from './memory-position-store.js'

describePositionStoreConformance('memory', async () => ({ store: new MemoryPositionStore(), cleanup: async () => {} }))

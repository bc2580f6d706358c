import { describeServicePersistenceConformance } from '../testing/index.js'
import { MemoryServicePersistence } from './memory-service-persistence.js'

describeServicePersistenceConformance('memory', async ({ capacityBytes, policy }) => ({
  persistence: new MemoryServicePersistence({ capacityBytes, policy }),
  cleanup: async () => {}
}))

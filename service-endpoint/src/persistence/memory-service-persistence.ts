/**
 * Service persistence in memory ([SVC-PERSIST-*]): fast, bounded, and lost with the process
 * (`stats().durable` is false). Used on gateways without a writable disk, and by tests.
 */
import { randomUUID } from 'node:crypto'
import { ClosedError, ConfigError, checkInt, withDefaults, type RaisedEvent } from '@herald/protocol'
import { EventRing, appendToRing } from './event-ring.js'
import { MarkTable, checkMarks } from './mark-table.js'
import { OverflowPolicy } from './service-persistence.js'
import type { AppendOutcome, PersistenceStats, ServicePersistence } from './service-persistence.js'

/** What a user passes to `new MemoryServicePersistence()`. */
export interface MemoryServicePersistenceOptions {
  /** Most bytes held, by `eventSize`. Default 64 MiB. */
  capacityBytes?: number
  /** What to do when full ([SVC-CAPACITY-1]). Default dropOldest. */
  policy?: OverflowPolicy
  /** The instance id ([SVC-PERSIST-1]). Default: a new random UUID. */
  instance?: string
}

/** Defaults of `MemoryServicePersistenceOptions` (instance '' means "a new random UUID"). */
export const MEMORY_SERVICE_PERSISTENCE_DEFAULTS: Readonly<Required<MemoryServicePersistenceOptions>> = Object.freeze({
  capacityBytes: 64 * 1024 * 1024,
  policy: OverflowPolicy.dropOldest,
  instance: ''
})

const COMPONENT = 'MemoryServicePersistence'

/** Checks a capacity and a policy option; shared by every backend. */
export function checkCapacityAndPolicy (component: string, capacityOption: string, capacityBytes: number, policy: string): void {
  checkInt(component, capacityOption, capacityBytes, 1, Number.MAX_SAFE_INTEGER)
  if (policy !== OverflowPolicy.dropOldest && policy !== OverflowPolicy.reject) {
    throw new ConfigError(`${component}: option "policy" must be "dropOldest" or "reject", got ${JSON.stringify(policy)}`)
  }
}

/** Events held in an `EventRing`, in memory only. */
export class MemoryServicePersistence implements ServicePersistence {
  readonly instance: string
  private readonly capacityBytes: number
  private readonly policy: OverflowPolicy
  private readonly ring = new EventRing()
  private readonly markTable = new MarkTable()
  private last = 0
  private closed = false

  constructor (options: MemoryServicePersistenceOptions = {}) {
    const o = withDefaults(COMPONENT, MEMORY_SERVICE_PERSISTENCE_DEFAULTS, options)
    checkCapacityAndPolicy(COMPONENT, 'capacityBytes', o.capacityBytes, o.policy)
    this.capacityBytes = o.capacityBytes
    this.policy = o.policy
    this.instance = o.instance === '' ? randomUUID() : o.instance
  }

  lastSeq (): number {
    return this.last
  }

  async append (events: readonly RaisedEvent[], supersede: readonly number[] = [], marks?: ReadonlyMap<string, string>): Promise<AppendOutcome> {
    this.checkOpen()
    const { outcome, lastSeq } = appendToRing(this.ring, this.last, events, supersede, this.capacityBytes, this.policy, this.markTable, checkMarks(marks))
    this.last = lastSeq
    return outcome
  }

  /** [SVC-MARK-1] A copy of the current marks. */
  marks (): ReadonlyMap<string, string> {
    return this.markTable.snapshot()
  }

  async read (after: number, limit: number): Promise<RaisedEvent[]> {
    this.checkOpen()
    return this.ring.read(after, limit)
  }

  async acknowledge (upTo: number): Promise<void> {
    this.checkOpen()
    this.ring.removeUpTo(upTo)
  }

  async remove (seqs: readonly number[]): Promise<void> {
    this.checkOpen()
    for (const seq of seqs) this.ring.removeSeq(seq)
  }

  stats (): PersistenceStats {
    return { count: this.ring.count, bytes: this.ring.bytes, capacityBytes: this.capacityBytes, durable: false }
  }

  /** Drops every event and mark; later calls reject with CLOSED. Idempotent. */
  async close (): Promise<void> {
    this.closed = true
    this.ring.clear()
    this.markTable.clear()
  }

  private checkOpen (): void {
    if (this.closed) throw new ClosedError(`${COMPONENT} is closed`)
  }
}

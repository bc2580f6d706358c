/** Positions in memory: a restarted client starts over (from everything the broker holds, or new events). */
import type { PositionStore, SubscriptionPosition } from './position-store.js'
import { MemoryDeadLetters } from './dead-letter-store.js'

export interface MemoryPositionStoreOptions {
  /** Most dead letters kept ([CLI-DEAD-4]), in memory, lost with the process. Default 10,000. */
  readonly maxDeadLetters?: number
}

export class MemoryPositionStore implements PositionStore {
  readonly durable = false
  private readonly map = new Map<string, { position: number, started: number | null }>()
  readonly deadLetters: MemoryDeadLetters

  constructor (options: MemoryPositionStoreOptions = {}) {
    this.deadLetters = new MemoryDeadLetters(options.maxDeadLetters, (key, position, started) => {
      if (started === null) this.commit(key, position)
      else this.advance(key, position, started)
    })
  }

  get (key: string): SubscriptionPosition | null {
    const r = this.map.get(key)
    return r === undefined ? null : { position: r.position, started: r.started }
  }

  markStarted (key: string, position: number): void {
    const r = this.map.get(key)
    if (r === undefined) this.map.set(key, { position: 0, started: position })
    else r.started = position
  }

  commit (key: string, position: number): void {
    const r = this.map.get(key)
    if (r === undefined) this.map.set(key, { position, started: null })
    else {
      r.position = position
      r.started = null
    }
  }

  advance (key: string, committed: number, started: number): void {
    this.map.set(key, { position: committed, started })
  }

  close (): void {
    this.map.clear()
    this.deadLetters.clear()
  }
}

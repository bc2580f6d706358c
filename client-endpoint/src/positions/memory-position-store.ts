/** Positions in memory: a restarted client starts over (from everything the broker holds, or new events). */
import type { PositionStore, SubscriptionPosition } from './position-store.js'
import { MemoryDeadLetters } from './dead-letter-store.js'

export interface MemoryPositionStoreOptions {
  /** Most dead letters kept ([CLI-DEAD-4]), in memory, lost with the process. Default 10,000. */
  readonly maxDeadLetters?: number
}

export class MemoryPositionStore implements PositionStore {
  readonly durable = false
  private readonly map = new Map<string, { position: number, started: number | null, done: readonly number[] }>()
  readonly deadLetters: MemoryDeadLetters

  constructor (options: MemoryPositionStoreOptions = {}) {
    this.deadLetters = new MemoryDeadLetters(options.maxDeadLetters, (key, position, started, done) => {
      if (done !== undefined) this.settle(key, position, started, done)
      else if (started === null) this.commit(key, position)
      else this.advance(key, position, started)
    })
  }

  get (key: string): SubscriptionPosition | null {
    const r = this.map.get(key)
    return r === undefined ? null : r.done.length === 0 ? { position: r.position, started: r.started } : { position: r.position, started: r.started, done: r.done }
  }

  markStarted (key: string, position: number): void {
    const r = this.map.get(key)
    if (r === undefined) this.map.set(key, { position: 0, started: position, done: [] })
    else r.started = position
  }

  commit (key: string, position: number): void {
    const r = this.map.get(key)
    if (r === undefined) this.map.set(key, { position, started: null, done: [] })
    else {
      r.position = position
      r.started = null
      r.done = []
    }
  }

  advance (key: string, committed: number, started: number): void {
    this.map.set(key, { position: committed, started, done: [] })
  }

  /** [CLI-CONC-3] */
  settle (key: string, committed: number, started: number | null, done: readonly number[]): void {
    this.map.set(key, { position: committed, started, done: [...done] })
  }

  close (): void {
    this.map.clear()
    this.deadLetters.clear()
  }
}

/** Fans a component's status out to `status` listeners and to `statusUpdates()` async iterables. */
import { AsyncQueue } from './async-queue.js'

export class StatusFeed<T> {
  private readonly queues = new Set<AsyncQueue<T>>()

  /** A new stream that starts with `current`. Unread updates past 100 drop the oldest. */
  stream (current: T): AsyncIterable<T> {
    const q = new AsyncQueue<T>(100)
    q.push(current)
    this.queues.add(q)
    return q
  }

  /** True if any stream is open. */
  get active (): boolean {
    return this.queues.size > 0
  }

  push (status: T): void {
    for (const q of this.queues) q.push(status)
  }

  /** Pushes the last status and ends every stream. */
  end (last: T): void {
    for (const q of this.queues) {
      q.push(last)
      q.end()
    }
    this.queues.clear()
  }
}

/** A bounded push queue read as an async iterable: how status streams are exposed. */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = []
  private waiter: ((r: IteratorResult<T>) => void) | null = null
  private ended = false

  /** `limit`: most unread items kept; the oldest are dropped past it (a status stream only needs the latest). */
  constructor (private readonly limit = 100) {}

  push (item: T): void {
    if (this.ended) return
    if (this.waiter !== null) {
      const w = this.waiter
      this.waiter = null
      w({ value: item, done: false })
      return
    }
    this.items.push(item)
    if (this.items.length > this.limit) this.items.shift()
  }

  end (): void {
    this.ended = true
    if (this.waiter !== null) {
      const w = this.waiter
      this.waiter = null
      w({ value: undefined, done: true })
    }
  }

  [Symbol.asyncIterator] (): AsyncIterator<T> {
    return {
      next: () => {
        const item = this.items.shift()
        if (item !== undefined) return Promise.resolve({ value: item, done: false })
        if (this.ended) return Promise.resolve({ value: undefined, done: true })
        return new Promise((resolve) => { this.waiter = resolve })
      },
      return: () => {
        this.end()
        return Promise.resolve({ value: undefined, done: true })
      }
    }
  }
}

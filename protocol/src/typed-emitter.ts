/**
 * A small typed event emitter (no node:events, so it runs in a browser): listeners and emits are
 * checked against an event map. Listeners run synchronously, in the order they were added; a
 * listener that throws stops the emit, as with node:events.
 */
type Listener = (...args: never[]) => void

export class TypedEmitter<Events extends Record<keyof Events, (...args: never[]) => void>> {
  readonly #listeners = new Map<keyof Events, Listener[]>()

  on<E extends keyof Events> (event: E, listener: Events[E]): this {
    const list = this.#listeners.get(event)
    // copy on write, so an emit in progress calls exactly the listeners it started with
    this.#listeners.set(event, list === undefined ? [listener] : [...list, listener])
    return this
  }

  once<E extends keyof Events> (event: E, listener: Events[E]): this {
    const wrapper = ((...args: Parameters<Events[E]>) => {
      this.off(event, wrapper)
      ;(listener as unknown as (...a: Parameters<Events[E]>) => void)(...args)
    }) as unknown as Events[E]
    return this.on(event, wrapper)
  }

  off<E extends keyof Events> (event: E, listener: Events[E]): this {
    const list = this.#listeners.get(event)
    if (list === undefined) return this
    const i = list.indexOf(listener)
    if (i >= 0) {
      const next = list.slice()
      next.splice(i, 1)
      if (next.length === 0) this.#listeners.delete(event)
      else this.#listeners.set(event, next)
    }
    return this
  }

  protected emit<E extends keyof Events> (event: E, ...args: Parameters<Events[E]>): boolean {
    const list = this.#listeners.get(event)
    if (list === undefined) return false
    for (const l of list) (l as unknown as (...a: Parameters<Events[E]>) => void)(...args)
    return true
  }

  listenerCount<E extends keyof Events> (event: E): number {
    return this.#listeners.get(event)?.length ?? 0
  }
}

/** A typed facade over node:events, so listeners and emits are checked against an event map. */
import { EventEmitter } from 'node:events'

export class TypedEmitter<Events extends Record<keyof Events, (...args: never[]) => void>> {
  readonly #ee = new EventEmitter()

  on<E extends keyof Events> (event: E, listener: Events[E]): this {
    this.#ee.on(event as string, listener as unknown as (...args: unknown[]) => void)
    return this
  }

  once<E extends keyof Events> (event: E, listener: Events[E]): this {
    this.#ee.once(event as string, listener as unknown as (...args: unknown[]) => void)
    return this
  }

  off<E extends keyof Events> (event: E, listener: Events[E]): this {
    this.#ee.off(event as string, listener as unknown as (...args: unknown[]) => void)
    return this
  }

  protected emit<E extends keyof Events> (event: E, ...args: Parameters<Events[E]>): boolean {
    return this.#ee.emit(event as string, ...args)
  }

  listenerCount<E extends keyof Events> (event: E): number {
    return this.#ee.listenerCount(event as string)
  }
}

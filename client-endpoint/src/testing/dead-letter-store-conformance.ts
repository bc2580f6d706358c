/**
 * The conformance suite every DeadLetterStore passes ([CLI-DEAD-2], [CLI-DEAD-4], [CLI-DEAD-5]): the
 * dead letter and the position in one write, the event kept as received, list/get/retry/discard,
 * a failed retry, the bound. Run by the memory and SQLite position stores' tests.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { ErrorCode, PayloadKind, PersistenceError, type StoredEvent } from '@herald/protocol'
import type { DeadLetterStore } from '../positions/dead-letter-store.js'
import type { PositionStore } from '../positions/position-store.js'

export interface DeadLetterStoreFixture {
  /** A position store with dead letters; `maxDeadLetters` as given. */
  readonly store: PositionStore & { readonly deadLetters: DeadLetterStore }
  cleanup (): Promise<void>
}

function event (position: number): StoredEvent {
  return {
    position, serviceId: 'svc', instance: 'inst', seq: position * 10, name: 'log', category: 'queueing',
    raisedAt: 1_000, receivedAt: 2_000, expiresAt: null, uploadAge: 3, isNull: false, recipient: null,
    payloadKind: PayloadKind.bytes, payload: new Uint8Array([position, 0, 255])
  }
}

const letter = (position: number, key = 'log') => ({ key, event: event(position), attempts: 3, lastError: `bad ${position}`, deadAt: 5_000 + position, age: 40 })

export function describeDeadLetterStoreConformance (name: string, factory: (maxDeadLetters: number) => Promise<DeadLetterStoreFixture>): void {
  describe(`DeadLetterStore conformance: ${name}`, () => {
    let fx: DeadLetterStoreFixture | null = null
    afterEach(async () => {
      await fx?.cleanup()
      fx = null
    })

    it('[CLI-DEAD-2] add records the dead letter and the position (and started mark) with it; the event as received', async () => {
      fx = await factory(100)
      const { store } = fx
      await store.markStarted('log', 4)
      const a = store.deadLetters.add(letter(4), 4, null)
      const b = store.deadLetters.add(letter(5, 'other'), 5, 9)
      expect(b).toBeGreaterThan(a)
      expect(store.get('log')).toEqual({ position: 4, started: null })
      expect(store.get('other')).toEqual({ position: 5, started: 9 })
      expect(store.deadLetters.get(a)).toEqual({ ...letter(4), id: a, eventId: 'inst-40', retry: false })
      expect(store.deadLetters.list().map((l) => l.id)).toEqual([a, b])
      expect(store.deadLetters.list('other').map((l) => l.id)).toEqual([b])
      expect(store.deadLetters.get(b + 100)).toBeNull()
    })

    it('[CLI-DEAD-5] retry marks, failed unmarks and counts, discard deletes; unknown ids answer false', async () => {
      fx = await factory(100)
      const d = fx.store.deadLetters
      const id = d.add(letter(1), 1, null)
      expect(d.retry(id)).toBe(true)
      expect(d.get(id)?.retry).toBe(true)
      d.failed(id, 'again', 5_001 + 20)
      expect(d.get(id)).toMatchObject({ retry: false, attempts: 4, lastError: 'again', deadAt: 5_021, age: 60 })
      expect(d.retry(id + 1)).toBe(false)
      expect(d.discard(id + 1)).toBe(false)
      expect(d.discard(id)).toBe(true)
      expect(d.list()).toEqual([])
    })

    it('[CLI-DEAD-4] bounded: one past maxDeadLetters throws CAPACITY_EXCEEDED and writes nothing, a discard makes room', async () => {
      fx = await factory(2)
      const { store } = fx
      expect(store.deadLetters.maxDeadLetters).toBe(2)
      const first = store.deadLetters.add(letter(1), 1, null)
      store.deadLetters.add(letter(2), 2, null)
      let err: unknown
      try { store.deadLetters.add(letter(3), 3, null) } catch (e) { err = e }
      expect(err).toBeInstanceOf(PersistenceError)
      expect((err as PersistenceError).code).toBe(ErrorCode.CAPACITY_EXCEEDED)
      expect(store.get('log')).toEqual({ position: 2, started: null })
      expect(store.deadLetters.list()).toHaveLength(2)
      store.deadLetters.discard(first)
      store.deadLetters.add(letter(3), 3, null)
      expect(store.get('log')?.position).toBe(3)
    })
  })
}

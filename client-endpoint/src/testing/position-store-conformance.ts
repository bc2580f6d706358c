/** The conformance suite every PositionStore backend passes ([CLI-POS-1] .. [CLI-POS-3]). */
import { describe, it, expect, afterEach } from 'vitest'
import type { PositionStore } from '../positions/position-store.js'

export interface PositionStoreFixture {
  readonly store: PositionStore
  /** For durable backends: close and open the same storage again. */
  readonly reopen?: () => PositionStore
  cleanup (): Promise<void>
}

export function describePositionStoreConformance (name: string, factory: () => Promise<PositionStoreFixture>): void {
  describe(`PositionStore conformance: ${name}`, () => {
    let fx: PositionStoreFixture | null = null
    afterEach(async () => {
      await fx?.cleanup()
      fx = null
    })

    it('knows nothing of a new key', async () => {
      fx = await factory()
      expect(fx.store.get('temperature')).toBeNull()
    })

    it('[CLI-POS-2] markStarted records started and keeps the position', async () => {
      fx = await factory()
      fx.store.commit('a', 7)
      fx.store.markStarted('a', 9)
      expect(fx.store.get('a')).toEqual({ position: 7, started: 9 })
      fx.store.markStarted('b', 3)
      expect(fx.store.get('b')).toEqual({ position: 0, started: 3 })
    })

    it('[CLI-POS-1] commit records the position and clears started', async () => {
      fx = await factory()
      fx.store.markStarted('a', 9)
      fx.store.commit('a', 9)
      expect(fx.store.get('a')).toEqual({ position: 9, started: null })
    })

    it('[CLI-POS-4] advance commits one position and marks the next started, in one call', async () => {
      fx = await factory()
      fx.store.markStarted('a', 3)
      fx.store.advance('a', 3, 4)
      expect(fx.store.get('a')).toEqual({ position: 3, started: 4 })
      fx.store.advance('new-key', 7, 8)
      expect(fx.store.get('new-key')).toEqual({ position: 7, started: 8 })
      fx.store.commit('a', 4)
      expect(fx.store.get('a')).toEqual({ position: 4, started: null })
    })

    it('keeps keys apart', async () => {
      fx = await factory()
      const keys = Array.from({ length: 50 }, (_, i) => `event-${i}?services=s${i}`)
      keys.forEach((k, i) => { fx?.store.commit(k, i * 10 + 1) })
      keys.forEach((k, i) => { expect(fx?.store.get(k)).toEqual({ position: i * 10 + 1, started: null }) })
    })

    it('[CLI-POS-3] a durable store keeps positions and started marks across reopen', async () => {
      fx = await factory()
      if (fx.reopen === undefined) {
        expect(fx.store.durable).toBe(false)
        return
      }
      expect(fx.store.durable).toBe(true)
      fx.store.commit('a', 41)
      fx.store.markStarted('a', 42)
      fx.store.commit('b', 5)
      const again = fx.reopen()
      expect(again.get('a')).toEqual({ position: 41, started: 42 })
      expect(again.get('b')).toEqual({ position: 5, started: null })
    })
  })
}

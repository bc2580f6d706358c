/**
 * The conformance suite every PositionStore backend passes ([CLI-POS-1] .. [CLI-POS-5]); it awaits
 * every write, so an asynchronous backend (IndexedDB, [CLI-BROWSER-2]) runs it too.
 */
import { describe, it, expect, afterEach } from 'vitest'
import type { PositionStore } from '../positions/position-store.js'

export interface PositionStoreFixture {
  readonly store: PositionStore
  /** For durable backends: close and open the same storage again. */
  readonly reopen?: () => PositionStore | Promise<PositionStore>
  /**
   * For backends durable against power loss ([CLI-POS-5]): close and open the same storage again as
   * after a reboot of the machine (a new boot id).
   */
  readonly reboot?: () => PositionStore | Promise<PositionStore>
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
      await fx.store.commit('a', 7)
      await fx.store.markStarted('a', 9)
      expect(fx.store.get('a')).toEqual({ position: 7, started: 9 })
      await fx.store.markStarted('b', 3)
      expect(fx.store.get('b')).toEqual({ position: 0, started: 3 })
    })

    it('[CLI-POS-1] commit records the position and clears started', async () => {
      fx = await factory()
      await fx.store.markStarted('a', 9)
      await fx.store.commit('a', 9)
      expect(fx.store.get('a')).toEqual({ position: 9, started: null })
    })

    it('[CLI-POS-4] advance commits one position and marks the next started, in one call', async () => {
      fx = await factory()
      await fx.store.markStarted('a', 3)
      await fx.store.advance('a', 3, 4)
      expect(fx.store.get('a')).toEqual({ position: 3, started: 4 })
      await fx.store.advance('new-key', 7, 8)
      expect(fx.store.get('new-key')).toEqual({ position: 7, started: 8 })
      await fx.store.commit('a', 4)
      expect(fx.store.get('a')).toEqual({ position: 4, started: null })
    })

    it('[CLI-CONC-3] settle records the low-water position, started and the finished events above it in one write; commit and advance clear them; durable across reopen', async () => {
      fx = await factory()
      const settle = fx.store.settle?.bind(fx.store)
      if (settle === undefined) {
        expect(fx.store.durable === false || fx.store.reserve === undefined).toBe(true) // only a store that refuses concurrency lacks it (IndexedDB)
        return
      }
      await settle('a', 4, 9, [6, 8])
      expect(fx.store.get('a')).toEqual({ position: 4, started: 9, done: [6, 8] })
      await settle('a', 9, null, [])
      expect(fx.store.get('a')).toEqual({ position: 9, started: null })
      await settle('b', 1, 5, [3])
      if (fx.reopen !== undefined) {
        const again = await fx.reopen()
        fx = { ...fx, store: again }
        expect(again.get('b')).toEqual({ position: 1, started: 5, done: [3] })
      }
      await fx.store.advance('b', 2, 5)
      expect(fx.store.get('b')).toEqual({ position: 2, started: 5 })
      await fx.store.settle?.('b', 2, 5, [4])
      await fx.store.commit('b', 5)
      expect(fx.store.get('b')).toEqual({ position: 5, started: null })
    })

    it('keeps keys apart', async () => {
      fx = await factory()
      const keys = Array.from({ length: 50 }, (_, i) => `event-${i}?services=s${i}`)
      for (const [i, k] of keys.entries()) await fx.store.commit(k, i * 10 + 1)
      keys.forEach((k, i) => { expect(fx?.store.get(k)).toEqual({ position: i * 10 + 1, started: null }) })
    })

    it('[CLI-POS-3] a durable store keeps positions and started marks across reopen', async () => {
      fx = await factory()
      if (fx.reopen === undefined) {
        expect(fx.store.durable).toBe(false)
        return
      }
      expect(fx.store.durable).toBe(true)
      await fx.store.commit('a', 41)
      await fx.store.markStarted('a', 42)
      await fx.store.commit('b', 5)
      const again = await fx.reopen()
      expect(again.get('a')).toEqual({ position: 41, started: 42 })
      expect(again.get('b')).toEqual({ position: 5, started: null })
    })

    it('[CLI-POS-5] reserve changes neither the position nor started, also across a reopen in the same boot', async () => {
      fx = await factory()
      if (fx.store.reserve === undefined) return
      await fx.store.commit('a', 5)
      await fx.store.markStarted('a', 6)
      await fx.store.reserve('a', 40)
      expect(fx.store.get('a')).toEqual({ position: 5, started: 6 })
      await fx.store.advance('a', 6, 7)
      expect(fx.store.get('a')).toEqual({ position: 6, started: 7 })
      await fx.store.reserve('new-key', 9)
      expect(fx.store.get('new-key')).toEqual({ position: 0, started: null })
      if (fx.reopen === undefined) return
      const again = await fx.reopen()
      expect(again.get('a')).toEqual({ position: 6, started: 7 })
      expect(again.get('new-key')).toEqual({ position: 0, started: null })
    })

    it('[CLI-POS-5] after a reboot every reserved event beyond the position reads as started, and stays so', async () => {
      fx = await factory()
      if (fx.reboot === undefined) {
        expect(fx.store.reserve === undefined || !fx.store.durable).toBe(true)
        return
      }
      const store = fx.store
      await store.commit('a', 5)
      await store.reserve?.('a', 40)
      await store.advance('a', 12, 13)
      await store.reserve?.('b', 20)
      await store.commit('b', 20) // everything reserved was handled
      await store.markStarted('c', 3)
      await store.reserve?.('d', 8) // a first reservation, nothing handled yet
      const after = await fx.reboot()
      expect(after.get('a')).toEqual({ position: 12, started: 40 })
      expect(after.get('b')).toEqual({ position: 20, started: null })
      expect(after.get('c')).toEqual({ position: 0, started: 3 })
      expect(after.get('d')).toEqual({ position: 0, started: 8 })
      // recorded durably at open: a process crash in the new boot keeps the whole range flagged
      expect((await fx.reopen?.())?.get('a')).toEqual({ position: 12, started: 40 })
    })
  })
}

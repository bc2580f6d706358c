// The logic of IndexedDbPositionStore in Node, on fake-indexeddb (an in-memory IndexedDB): the
// conformance suite and the open options. That a position survives a reload, and the tab lock,
// are proven in Chromium (test/browser-client.test.ts).
import 'fake-indexeddb/auto'
import { IDBFactory } from 'fake-indexeddb'
import { describe, it, expect } from 'vitest'
import { ConfigError, ErrorCode } from '@herald/protocol'
import { MemoryTransport } from '@herald/protocol/testing'
import { ClientEndpoint, MemoryPositionStore, type PositionStore } from './index.js'
import { describePositionStoreConformance } from '../testing/position-store-conformance.js'
import { IndexedDbPositionStore } from './indexeddb-position-store.js'

describePositionStoreConformance('indexeddb (fake-indexeddb)', async () => {
  const indexedDB = new IDBFactory()
  const open = (): Promise<IndexedDbPositionStore> => IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB, locks: null })
  let current = await open()
  return {
    store: current,
    reopen: async () => {
      await current.close()
      current = await open()
      return current
    },
    cleanup: async () => { await current.close() }
  }
})

describe('IndexedDbPositionStore', () => {
  it('keeps the positions of two client keys in one database apart', async () => {
    const indexedDB = new IDBFactory()
    const a = await IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB, locks: null })
    const b = await IndexedDbPositionStore.open({ clientKey: 'alice/console2', indexedDB, locks: null })
    await a.commit('temperature', 5)
    await b.advance('temperature', 9, 10)
    await a.close()
    await b.close()
    const a2 = await IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB, locks: null })
    expect(a2.get('temperature')).toEqual({ position: 5, started: null })
    await a2.close()
  })

  it('answers get at once after a write, before the write is done', async () => {
    const store = await IndexedDbPositionStore.open({ clientKey: 'x/y', indexedDB: new IDBFactory(), locks: null })
    const w = store.markStarted('k', 3)
    expect(store.get('k')).toEqual({ position: 0, started: 3 })
    await w
    await store.close()
  })

  it('close waits for the writes made before it', async () => {
    const indexedDB = new IDBFactory()
    const store = await IndexedDbPositionStore.open({ clientKey: 'x/y', indexedDB, locks: null })
    for (let p = 1; p <= 100; p++) void store.commit('k', p)
    await store.close()
    const again = await IndexedDbPositionStore.open({ clientKey: 'x/y', indexedDB, locks: null })
    expect(again.get('k')).toEqual({ position: 100, started: null })
    await again.close()
    await expect(again.commit('k', 101)).rejects.toThrow(/closed/)
  })

  it('refuses bad options, naming them', async () => {
    const indexedDB = new IDBFactory()
    await expect(IndexedDbPositionStore.open({ clientKey: 'a b/c', indexedDB, locks: null })).rejects.toThrow(/clientKey/)
    await expect(IndexedDbPositionStore.open({ clientKey: 'a/c', indexedDB, locks: null, ifLocked: 'steal' as 'wait' })).rejects.toThrow(/"ifLocked"/)
    await expect(IndexedDbPositionStore.open({ clientKey: 'a/c', indexedDB, locks: null, database: '' })).rejects.toThrow(/"database"/)
    // Node 20 has no navigator.locks: refused unless told to go without
    await expect(IndexedDbPositionStore.open({ clientKey: 'a/c', indexedDB, ...(typeof navigator !== 'undefined' && 'locks' in navigator ? { locks: undefined as unknown as null } : {}) })).rejects.toThrow(typeof navigator !== 'undefined' && 'locks' in navigator ? /.*/ : /Web Locks/)
  })

  it('[CLI-BROWSER-3] a second open of a held client key fails with POSITIONS_LOCKED; takeover makes the first one lost', async () => {
    const locks = new FakeLockManager()
    const indexedDB = new IDBFactory()
    const first = await IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB, locks })
    await expect(IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB, locks })).rejects.toMatchObject({ code: ErrorCode.POSITIONS_LOCKED })
    const other = await IndexedDbPositionStore.open({ clientKey: 'alice/other', indexedDB, locks })
    await other.close()
    await first.commit('k', 4)
    const second = await IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB, locks, ifLocked: 'takeover' })
    await expect(first.lost).resolves.toMatchObject({ code: ErrorCode.POSITIONS_LOCKED })
    await expect(first.commit('k', 5)).rejects.toMatchObject({ code: ErrorCode.POSITIONS_LOCKED })
    expect(second.get('k')).toEqual({ position: 4, started: null })
    await first.close()
    await second.close()
    // released at close: the next one gets it
    const third = await IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB, locks })
    await third.close()
  })
})

/** Enough of the Web Locks API (exclusive locks, ifAvailable, steal) for the store's logic. */
class FakeLockManager {
  private readonly held = new Map<string, { reject: (err: Error) => void }>()
  async request (name: string, options: LockOptions, callback: (lock: Lock | null) => Promise<void>): Promise<void> {
    if (this.held.has(name) && options.ifAvailable === true) {
      await callback(null)
      return
    }
    if (this.held.has(name) && options.steal === true) {
      const h = this.held.get(name)
      this.held.delete(name)
      h?.reject(Object.assign(new Error('The lock request is aborted'), { name: 'AbortError' }))
    }
    if (this.held.has(name)) throw new Error('FakeLockManager: waiting is not implemented')
    return new Promise<void>((resolve, reject) => {
      const entry = { reject }
      this.held.set(name, entry)
      callback({ name, mode: 'exclusive' }).then(() => {
        if (this.held.get(name) === entry) this.held.delete(name)
        resolve()
      }, reject)
    })
  }
}

describe('IndexedDbPositionStore and maxAttempts ([CLI-DEAD-6])', () => {
  it('keeps no dead letters: the browser endpoint refuses maxAttempts with it, with a ConfigError; accepts it with the memory store', async () => {
    const store = await IndexedDbPositionStore.open({ clientKey: 'alice/console', indexedDB: new IDBFactory(), locks: null })
    expect((store as PositionStore).deadLetters).toBeUndefined()
    const ep = new ClientEndpoint({ url: 'ws://broker.invalid:8080/mqtt', clientName: 'console', user: 'alice', password: 'alice-password-1', positions: store, transport: new MemoryTransport() })
    const err = await ep.subscribe('alarms', { maxAttempts: 3 }, () => {}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).message).toMatch(/"maxAttempts" needs a position store that keeps dead letters/)
    await ep.close()
    const mem = new ClientEndpoint({ url: 'ws://broker.invalid:8080/mqtt', clientName: 'console', user: 'alice', password: 'alice-password-1', positions: new MemoryPositionStore(), transport: new MemoryTransport() })
    const pending = mem.subscribe('alarms', { maxAttempts: 3 }, () => {})
    await mem.close()
    // refused only for closing, not for the option
    await expect(pending).rejects.toMatchObject({ code: ErrorCode.CLOSED })
  })
})

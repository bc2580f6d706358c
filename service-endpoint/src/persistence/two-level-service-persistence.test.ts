import { join } from 'node:path'
import { readdir, stat, writeFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { ErrorCode, HeraldError, PersistenceError, eventSize, type RaisedEvent } from '@herald/protocol'
import { tempDir } from '@herald/node-runtime/testing'
import { describeServicePersistenceConformance, sizedEvent } from '../testing/index.js'
import { createTwoLevelServicePersistence } from './two-level-service-persistence.js'
import type { LevelFailure, TwoLevelServicePersistenceOptions } from './two-level-service-persistence.js'

// level 1 is kept small (1,000 bytes: about ten events) so the suite runs through refills from the file
describeServicePersistenceConformance('two-level', async ({ capacityBytes, policy }) => {
  const dir = await tempDir('herald-sp2-')
  const options = { path: join(dir.path, 'persistence.db'), memoryCapacityBytes: 1_000, fileCapacityBytes: capacityBytes, policy }
  return {
    persistence: await createTwoLevelServicePersistence(options),
    reopen: async () => createTwoLevelServicePersistence(options),
    cleanup: dir.remove
  }
})

const seqsOf = (events: readonly RaisedEvent[]): number[] => events.map((e) => e.seq)
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe('TwoLevelServicePersistence', () => {
  async function withDir<T> (fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = await tempDir('herald-sp2-')
    try {
      return await fn(dir.path)
    } finally {
      await dir.remove()
    }
  }

  /** Opens a two-level persistence whose file fills up at 64 KiB (SQLITE_FULL, as on a full disk). */
  async function openSmallFile (dir: string, extra: Partial<TwoLevelServicePersistenceOptions> = {}) {
    const failures: LevelFailure[] = []
    const p = await createTwoLevelServicePersistence({ path: join(dir, 'p.db'), maxSizeBytes: 64 * 1024, onFailure: (f) => failures.push(f), ...extra })
    return { p, failures }
  }

  it('switches to memory only when the file fills up: onFailure once, no event lost, appends keep resolving', async () => {
    await withDir(async (dir) => {
      const { p, failures } = await openSmallFile(dir)
      const instance = p.instance
      expect(p.level()).toBe('two-level')
      expect(p.stats().durable).toBe(true)
      // raise-like: four concurrent single-event appends at a time, until the file fails
      let seq = 0
      while (p.level() === 'two-level') {
        const outcomes = await Promise.all(range(seq + 1, seq + 4).map(async (s) => p.append([sizedEvent(s, 2_000)])))
        for (const o of outcomes) expect(o.dropped).toEqual([])
        seq += 4
        expect(seq).toBeLessThan(200)
      }
      expect(failures.length).toBe(1)
      expect(failures[0]?.lost).toBe(0)
      expect(failures[0]?.error).toBeInstanceOf(PersistenceError)
      expect(failures[0]?.error.code).toBe(ErrorCode.PERSISTENCE_FAILED)
      expect(p.stats()).toEqual({ count: seq, bytes: seq * 2_000, capacityBytes: 64 * 1024 * 1024, durable: false })
      expect(p.lastSeq()).toBe(seq)
      expect(p.instance).toBe(instance)

      // it keeps working, in memory
      await Promise.all(range(seq + 1, seq + 20).map(async (s) => p.append([sizedEvent(s, 2_000)])))
      await p.acknowledge(3)
      await p.remove([5])
      expect(await rejectionCode(p.append([sizedEvent(seq)]))).toBe(ErrorCode.INVALID_ARGUMENT)
      const expected = range(4, seq + 20).filter((s) => s !== 5)
      expect(seqsOf(await p.read(0, 10_000))).toEqual(expected)
      expect(p.stats().count).toBe(expected.length)
      expect(p.lastSeq()).toBe(seq + 20)
      expect(failures.length).toBe(1)
      await p.close()
    })
  })

  it('reports as lost exactly the file-only events that do not fit in memory, and keeps every memory event', async () => {
    await withDir(async (dir) => {
      // level 1 holds 5 events of 2,000 bytes
      const { p, failures } = await openSmallFile(dir, { memoryCapacityBytes: 10_500 })
      let seq = 0
      let last: { dropped: readonly RaisedEvent[] } = { dropped: [] }
      while (p.level() === 'two-level') {
        seq++
        expect(seq).toBeLessThan(200)
        last = await p.append([sizedEvent(seq, 2_000)])
      }
      // events 1..seq-1 were in the file; 1..5 also in memory. The failing append (seq) was retried in memory:
      // 5 x 2,000 held + 2,000 > 10,500, so dropOldest dropped event 1 and reported it
      const inFile = seq - 1
      expect(inFile).toBeGreaterThan(5)
      expect(failures).toHaveLength(1)
      expect(failures[0]?.lost).toBe(inFile - 5)
      expect(seqsOf(last.dropped)).toEqual([1])
      expect(seqsOf(await p.read(0, 1_000))).toEqual([2, 3, 4, 5, seq])
      expect(p.stats()).toEqual({ count: 5, bytes: 10_000, capacityBytes: 10_500, durable: false })
      expect(p.lastSeq()).toBe(seq)
      await p.close()
    })
  })

  it('under reject, keeps the memory events when the retried append does not fit', async () => {
    await withDir(async (dir) => {
      const { p, failures } = await openSmallFile(dir, { memoryCapacityBytes: 10_500, policy: 'reject' })
      let seq = 0
      let err: unknown
      while (p.level() === 'two-level') {
        seq++
        expect(seq).toBeLessThan(200)
        err = await p.append([sizedEvent(seq, 2_000)]).then(() => undefined, (e: unknown) => e)
      }
      expect(failures).toHaveLength(1)
      expect(failures[0]?.lost).toBe(seq - 1 - 5)
      expect((err as PersistenceError).code).toBe(ErrorCode.CAPACITY_EXCEEDED)
      expect(seqsOf(await p.read(0, 1_000))).toEqual([1, 2, 3, 4, 5])
      expect(p.lastSeq()).toBe(seq - 1)
      await p.acknowledge(2)
      await p.append([sizedEvent(seq, 2_000)])
      expect(seqsOf(await p.read(0, 1_000))).toEqual([3, 4, 5, seq])
      await p.close()
    })
  })

  it('keeps the marks in memory after a fallback, from the last committed ones, with those of the retried appends [SVC-MARK-1]', async () => {
    await withDir(async (dir) => {
      const { p, failures } = await openSmallFile(dir)
      let seq = 0
      while (p.level() === 'two-level') {
        // four concurrent appends: the one that fails the file, and those queued behind it, are retried in memory
        await Promise.all(range(seq + 1, seq + 4).map(async (s) => p.append([sizedEvent(s, 2_000)], [], new Map([[`dev-${s % 4}`, `${s}`], [`seq-${s}`, 'x']]))))
        seq += 4
        expect(seq).toBeLessThan(200)
      }
      expect(failures).toHaveLength(1)
      const marksUpTo = (last: number): Array<[string, string]> => {
        const m = new Map<string, string>()
        for (const s of range(1, last)) m.set(`dev-${s % 4}`, `${s}`).set(`seq-${s}`, 'x')
        return [...m].sort()
      }
      const expected = marksUpTo(seq)
      expect([...p.marks()].sort()).toEqual(expected)
      // the file failed with marks committed before: they are in memory now, and go on from there
      await p.append([], [], new Map([['dev-0', 'memory only']]))
      expect(p.marks().get('dev-0')).toBe('memory only')
      expect(p.marks().size).toBe(expected.length)
      expect(p.stats().durable).toBe(false)
      await p.close()
      // the file has the marks of the appends it committed: all but the last four, whose commit failed
      const q = await createTwoLevelServicePersistence({ path: join(dir, 'p.db') })
      expect([...q.marks()].sort()).toEqual(marksUpTo(seq - 4))
      await q.close()
    })
  })

  it('refuses a malformed event with INVALID_ARGUMENT without giving up the file', async () => {
    await withDir(async (dir) => {
      const { p, failures } = await openSmallFile(dir)
      await p.append([sizedEvent(1)])
      const bad = [
        { ...sizedEvent(3), category: 'sometimes' },
        { ...sizedEvent(3), payload: 'text' },
        { ...sizedEvent(3), payloadKind: 7 },
        { ...sizedEvent(3), raisedAt: Number.NaN }
      ] as unknown as RaisedEvent[]
      for (const e of bad) expect(await rejectionCode(p.append([sizedEvent(2), e]))).toBe(ErrorCode.INVALID_ARGUMENT)
      expect(p.level()).toBe('two-level')
      expect(failures).toEqual([])
      expect(seqsOf(await p.read(0, 10))).toEqual([1])
      await p.close()
    })
  })

  it('[FILES-PRIVATE-1] keeps its file, -wal and -shm 0600 under umask 022', async () => {
    const old = process.umask(0o022)
    try {
      await withDir(async (dir) => {
        const p = await createTwoLevelServicePersistence({ path: join(dir, 'p.db') })
        await p.append([sizedEvent(1, 100)])
        const names = (await readdir(dir)).sort()
        const modes = await Promise.all(names.map(async (n) => `${n} 0${((await stat(join(dir, n))).mode & 0o777).toString(8)}`))
        expect(modes).toEqual(['p.db 0600', 'p.db-shm 0600', 'p.db-wal 0600'])
        await p.close()
      })
    } finally {
      process.umask(old)
    }
  })

  it('serves a backlog larger than memory in order, refilling memory from the file', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'p.db')
      const p = await createTwoLevelServicePersistence({ path, memoryCapacityBytes: 1_000 })
      const events = range(1, 300).map((s) => sizedEvent(s, 90 + (s % 3) * 10)) // 90, 100 or 110 bytes
      for (let i = 0; i < 300; i += 30) await Promise.all(events.slice(i, i + 30).map(async (e) => p.append([e])))
      expect(p.stats().count).toBe(300)
      // level 1 holds the oldest events that fit in 1,000 bytes
      const prefix = (from: number): number => {
        let bytes = 0
        let n = 0
        for (const e of events.slice(from)) { if (bytes + eventSize(e) > 1_000) break; bytes += eventSize(e); n++ }
        return n
      }
      expect(p.memoryStats().count).toBe(prefix(0))

      // an upload loop: read a window, acknowledge it
      const seen: number[] = []
      let after = 0
      for (;;) {
        const page = await p.read(after, 25)
        if (page.length === 0) break
        expect(page.map((e) => Array.from(e.payload))).toEqual(events.slice(after, after + page.length).map((e) => Array.from(e.payload)))
        seen.push(...seqsOf(page))
        after = page[page.length - 1]?.seq ?? after
        await p.acknowledge(after)
        expect(p.memoryStats().count).toBe(prefix(after))
      }
      expect(seen).toEqual(range(1, 300))
      expect(p.stats().count).toBe(0)
      await p.close()
    })
  })

  it('fills memory from the file when reopened', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'p.db')
      const p = await createTwoLevelServicePersistence({ path, memoryCapacityBytes: 1_000 })
      await p.append(range(1, 50).map((s) => sizedEvent(s, 100)))
      await p.close()
      const q = await createTwoLevelServicePersistence({ path, memoryCapacityBytes: 1_000 })
      expect(q.memoryStats().count).toBe(10)
      expect(q.stats().count).toBe(50)
      expect(seqsOf(await q.read(5, 10))).toEqual(range(6, 15))
      await q.close()
    })
  })

  it('rejects an unusable file at open, or starts memory-only with openFailure "memory"', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'garbage.db')
      await writeFile(path, Buffer.alloc(8192, 0x42))
      const err = await createTwoLevelServicePersistence({ path }).then(() => undefined, (e: unknown) => e)
      expect(err).toBeInstanceOf(PersistenceError)
      expect((err as PersistenceError).message).toContain(path)

      const failures: LevelFailure[] = []
      const p = await createTwoLevelServicePersistence({ path, openFailure: 'memory', memoryCapacityBytes: 5_000, onFailure: (f) => failures.push(f) })
      expect(failures).toHaveLength(1)
      expect(failures[0]?.lost).toBe(0)
      expect(failures[0]?.error.message).toContain(path)
      expect(p.level()).toBe('memory-only')
      expect(p.stats()).toEqual({ count: 0, bytes: 0, capacityBytes: 5_000, durable: false })
      await p.append([sizedEvent(1), sizedEvent(2)])
      expect(seqsOf(await p.read(0, 10))).toEqual([1, 2])
      await p.close()
    })
  })
})

async function rejectionCode (p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(HeraldError)
  return (err as HeraldError).code
}

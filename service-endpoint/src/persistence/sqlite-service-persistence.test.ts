import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { chmod, readdir, stat, writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { afterEach, describe, expect, it } from 'vitest'
import Database from 'better-sqlite3'
import { ErrorCode, PersistenceError } from '@herald/protocol'
import { tempDir } from '@herald/node-runtime/testing'
import { describeServicePersistenceConformance, sizedEvent } from '../testing/index.js'
import { createSqliteServicePersistence } from './sqlite-service-persistence.js'

describeServicePersistenceConformance('sqlite', async ({ capacityBytes, policy }) => {
  const dir = await tempDir('herald-sp-')
  const path = join(dir.path, 'persistence.db')
  return {
    persistence: await createSqliteServicePersistence({ path, capacityBytes, policy }),
    reopen: async () => createSqliteServicePersistence({ path, capacityBytes, policy }),
    cleanup: dir.remove
  }
})

describe('SqliteServicePersistence', () => {
  // a writer process left running by a failed test
  afterEach(() => { for (const child of writers.splice(0)) child.kill('SIGKILL') })

  async function withDir<T> (fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = await tempDir('herald-sp-')
    try {
      return await fn(dir.path)
    } finally {
      await dir.remove()
    }
  }

  async function openError (path: string): Promise<PersistenceError> {
    const err = await createSqliteServicePersistence({ path }).then(async (p) => { await p.close(); return undefined }, (e: unknown) => e)
    expect(err).toBeInstanceOf(PersistenceError)
    expect((err as PersistenceError).code).toBe(ErrorCode.PERSISTENCE_FAILED)
    expect((err as PersistenceError).message).toContain(path)
    return err as PersistenceError
  }

  /** Each file in `dir` with its permissions, e.g. `p.db 0600`. */
  async function modes (dir: string): Promise<string[]> {
    const names = (await readdir(dir)).sort()
    return Promise.all(names.map(async (n) => `${n} 0${((await stat(join(dir, n))).mode & 0o777).toString(8)}`))
  }

  it('[FILES-PRIVATE-1] creates the file, its -wal and -shm 0600 under umask 022, and makes an existing file 0600', async () => {
    const old = process.umask(0o022)
    try {
      await withDir(async (dir) => {
        const path = join(dir, 'p.db')
        const p = await createSqliteServicePersistence({ path })
        await p.append([sizedEvent(1, 100)])
        expect(await modes(dir)).toEqual(['p.db 0600', 'p.db-shm 0600', 'p.db-wal 0600'])
        await p.close()
        // as an older version left it: the file and an (empty) -wal readable by all
        await chmod(path, 0o644)
        await writeFile(`${path}-wal`, '', { mode: 0o644 })
        const q = await createSqliteServicePersistence({ path })
        expect((await q.read(0, 10)).map((e) => e.seq)).toEqual([1])
        await q.append([sizedEvent(2, 100)])
        expect(await modes(dir)).toEqual(['p.db 0600', 'p.db-shm 0600', 'p.db-wal 0600'])
        await q.close()
      })
    } finally {
      process.umask(old)
    }
  })

  it('rejects appends with PERSISTENCE_FAILED when the disk is full, keeping its counters true to the file', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'full.db')
      const p = await createSqliteServicePersistence({ path, maxSizeBytes: 64 * 1024 })
      let seq = 0
      let err: unknown
      for (;;) {
        const before = { stats: p.stats(), lastSeq: p.lastSeq() }
        // four concurrent appends share one transaction: when it fails, all four reject
        const results = await Promise.allSettled([1, 2, 3, 4].map(async (i) => p.append([sizedEvent(seq + i, 2_000)])))
        const failed = results.filter((r) => r.status === 'rejected')
        if (failed.length === 0) { seq += 4; continue }
        expect(failed.length).toBe(4)
        err = (failed[0] as PromiseRejectedResult).reason
        expect(p.stats()).toEqual(before.stats)
        expect(p.lastSeq()).toBe(before.lastSeq)
        break
      }
      expect(seq).toBeGreaterThan(4)
      expect(err).toBeInstanceOf(PersistenceError)
      expect((err as PersistenceError).code).toBe(ErrorCode.PERSISTENCE_FAILED)
      expect(((err as PersistenceError).cause as { code: string }).code).toBe('SQLITE_FULL')
      const held = Array.from({ length: seq }, (_, i) => sizedEvent(i + 1, 2_000))
      expect((await p.read(0, 1_000)).map((e) => e.seq)).toEqual(held.map((e) => e.seq))
      expect(p.stats().count).toBe(seq)

      // acknowledging frees pages: appends work again
      await p.acknowledge(8)
      await p.append([sizedEvent(seq + 1, 2_000)])
      await p.close()

      const q = await createSqliteServicePersistence({ path })
      expect((await q.read(0, 1_000)).map((e) => e.seq)).toEqual([...held.slice(8), sizedEvent(seq + 1)].map((e) => e.seq))
      expect(q.stats().count).toBe(seq - 8 + 1)
      expect(q.stats().bytes).toBe((seq - 8 + 1) * 2_000)
      expect(q.lastSeq()).toBe(seq + 1)
      await q.close()
    })
  })

  it('refuses a garbage file, naming its path', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'garbage.db')
      const junk = Buffer.alloc(3 * 4096)
      for (let i = 0; i < junk.length; i++) junk[i] = (i * 131 + 17) & 0xff
      await writeFile(path, junk)
      const err = await openError(path)
      expect((err.cause as { code: string }).code).toBe('SQLITE_NOTADB')
    })
  })

  it('refuses an SQLite file of something else, naming its path', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'other.db')
      const db = new Database(path)
      db.exec('CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)')
      db.close()
      const err = await openError(path)
      expect(err.message).toContain('not a Herald service persistence file')
    })
  })

  it('refuses a damaged persistence file, naming its path', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'damaged.db')
      const p = await createSqliteServicePersistence({ path })
      await p.append(Array.from({ length: 400 }, (_, i) => sizedEvent(i + 1, 500)))
      await p.close()
      // overwrite the b-tree pages after the first two (header, schema) with garbage
      const db = new Database(path)
      const pages = db.pragma('page_count', { simple: true }) as number
      db.close()
      expect(pages).toBeGreaterThan(10)
      const { open } = await import('node:fs/promises')
      const fh = await open(path, 'r+')
      await fh.write(Buffer.alloc(4096 * (pages - 4), 0x5a), 0, 4096 * (pages - 4), 4096 * 3)
      await fh.close()
      const err = await openError(path)
      expect(err.message).toMatch(/damaged|malformed|corrupt/i)
    })
  })

  it('refuses a path in a missing directory, naming it', async () => {
    await withDir(async (dir) => {
      await openError(join(dir, 'no', 'such', 'dir', 'p.db'))
    })
  })

  it('checks its options', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'p.db')
      await expect(createSqliteServicePersistence({ path, capacityBytes: 0 })).rejects.toThrow(/capacityBytes/)
      await expect(createSqliteServicePersistence({ path, policy: 'dropNewest' as 'reject' })).rejects.toThrow(/policy/)
      await expect(createSqliteServicePersistence({ path, colour: 'blue' } as { path: string })).rejects.toThrow(/colour/)
      await expect(createSqliteServicePersistence({ path: '' })).rejects.toThrow(/path/)
    })
  })

  it('opens a file made before marks existed: its events are kept, and marks are written from then on [SVC-MARK-1]', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'old.db')
      const p = await createSqliteServicePersistence({ path })
      await p.append([sizedEvent(1), sizedEvent(2)])
      await p.close()
      // the schema before marks: the same, without the marks table
      const db = new Database(path)
      db.exec('DROP TABLE marks')
      db.close()
      const q = await createSqliteServicePersistence({ path })
      expect([...q.marks()]).toEqual([])
      expect((await q.read(0, 10)).map((e) => e.seq)).toEqual([1, 2])
      await q.append([sizedEvent(3)], [], new Map([['dev', '3']]))
      await q.close()
      const r = await createSqliteServicePersistence({ path })
      expect([...r.marks()]).toEqual([['dev', '3']])
      expect(r.lastSeq()).toBe(3)
      await r.close()
    })
  })

  it('writes none of the marks of a commit that fails (disk full) [SVC-MARK-1]', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'full.db')
      const p = await createSqliteServicePersistence({ path, maxSizeBytes: 64 * 1024 })
      let seq = 0
      for (;;) {
        // four concurrent appends share one transaction, each with the mark of its own key and a shared one
        const results = await Promise.allSettled([1, 2, 3, 4].map(async (i) => p.append([sizedEvent(seq + i, 2_000)], [], new Map([[`dev-${i}`, `${seq + i}`], ['last', `${seq + i}`]]))))
        const failed = results.filter((r) => r.status === 'rejected')
        if (failed.length === 0) { seq += 4; continue }
        expect(failed.length).toBe(4)
        expect(((failed[0] as PromiseRejectedResult).reason as PersistenceError).code).toBe(ErrorCode.PERSISTENCE_FAILED)
        break
      }
      expect(seq).toBeGreaterThan(4)
      const committed = [['dev-1', `${seq - 3}`], ['dev-2', `${seq - 2}`], ['dev-3', `${seq - 1}`], ['dev-4', `${seq}`], ['last', `${seq}`]]
      expect([...p.marks()].sort()).toEqual(committed)
      // a marks-only append needs a page too, and fails the same way
      const big = new Map(Array.from({ length: 1_000 }, (_, i) => [`key-${i}`.padEnd(200, '.'), 'v'.repeat(200)]))
      expect(((await p.append([], [], big).catch((e: unknown) => e)) as PersistenceError).code).toBe(ErrorCode.PERSISTENCE_FAILED)
      expect([...p.marks()].sort()).toEqual(committed)
      await p.close()
      const q = await createSqliteServicePersistence({ path })
      expect([...q.marks()].sort()).toEqual(committed)
      expect(q.lastSeq()).toBe(seq)
      await q.close()
    })
  })

  it('keeps marks and events atomic across SIGKILLs of a process appending both [SVC-MARK-1]', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'crash.db')
      const devices = 3
      let lastFrame = 0
      for (let run = 0; run < 3; run++) {
        const out = await runUntilKilled(JSON.stringify({ path, devices }), 200 + run * 150)
        expect(out.start).toBe(lastFrame + 1) // resumes right after the last frame its marks record
        const p = await createSqliteServicePersistence({ path })
        const marks = p.marks()
        expect(marks.size).toBe(devices)
        const last = Math.max(...[...marks.values()].map(Number))
        // every append that resolved is there
        expect(last).toBeGreaterThanOrEqual(out.confirmed)
        expect(out.confirmed).toBeGreaterThanOrEqual(out.start + 200 + run * 150)
        // each mark is the last frame of its device up to `last`...
        for (let d = 0; d < devices; d++) {
          let k = last
          while (k % devices !== d) k--
          expect(marks.get(`device-${d}`)).toBe(String(k))
        }
        // ...and the events are exactly those of frames 1..last, each once, in order: none of a frame
        // whose mark is missing, none missing for a frame whose mark is there
        const expected: string[] = []
        for (let k = 1; k <= last; k++) for (let part = 0; part < k % 3; part++) expected.push(`${k}/${part}`)
        const held = (await p.read(0, 1_000_000)).map((e) => Buffer.from(e.payload).toString())
        expect(held.length).toBe(expected.length)
        expect(held).toEqual(expected)
        expect(p.lastSeq()).toBe(expected.length)
        await p.close()
        lastFrame = last
      }
    })
  })

  it('commits concurrent calls in one transaction, in call order (group commit)', async () => {
    await withDir(async (dir) => {
      const p = await createSqliteServicePersistence({ path: join(dir, 'p.db') })
      const flushes: string[][] = []
      p.observe({ committed: (ops) => flushes.push(ops.map((op) => op.kind)), failed: () => {} })
      const calls: Array<Promise<unknown>> = []
      for (let s = 1; s <= 500; s++) calls.push(p.append([sizedEvent(s)]))
      calls.push(p.acknowledge(100), p.remove([200, 300]))
      await Promise.all(calls)
      expect(flushes.length).toBe(1)
      expect(flushes[0]?.length).toBe(502)
      expect(flushes[0]?.slice(-3)).toEqual(['append', 'ack', 'remove'])
      expect(p.stats().count).toBe(398)
      await p.close()
    })
  })
})

const WRITER = join(import.meta.dirname, 'marks-writer-proc.mjs')
const writers: ChildProcess[] = []

/**
 * Runs marks-writer-proc.mjs until it printed "ok <k>" for some k >= its first frame + `frames`, then
 * SIGKILLs it. Returns its first frame and the highest frame it confirmed.
 */
async function runUntilKilled (args: string, frames: number): Promise<{ start: number, confirmed: number }> {
  const child = spawn(process.execPath, [WRITER, args], { stdio: ['ignore', 'pipe', 'pipe'] })
  writers.push(child)
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<void>((resolve) => { child.once('exit', () => { resolve() }) })
  const lines = createInterface({ input: child.stdout })
  const closed = new Promise<void>((resolve) => { lines.once('close', () => { resolve() }) })
  let start = 0
  let confirmed = 0
  await new Promise<void>((resolve, reject) => {
    lines.on('line', (line) => {
      const [word, n] = line.split(' ')
      if (word === 'start') start = Number(n)
      else if (word === 'ok') confirmed = Math.max(confirmed, Number(n))
      if (start > 0 && confirmed >= start + frames) resolve()
    })
    void exited.then(() => { reject(new Error(`the writer exited before frame ${start + frames} (is dist built? npm run build): ${stderr}`)) })
  })
  child.kill('SIGKILL')
  await exited
  await closed // every line it printed has been read
  return { start, confirmed }
}

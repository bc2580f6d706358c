/**
 * The broker's data directory ([BROKER-DIR-1], [BROKER-LOCK-1] in docs/architecture.md, "Files and
 * locks"): created private (0700), its files private (0600), and locked by one broker at a time.
 *
 * The lock is an OS file lock, not a pid file: `broker.lock` is a SQLite database on which the
 * holder keeps an exclusive transaction open (SQLite's POSIX advisory locks, which the kernel releases
 * when the process ends in any way, SIGKILL and power loss included, and which SQLite also keeps
 * apart between connections of one process). A second broker on the directory gets SQLITE_BUSY at
 * once and stops before it opens anything else. No stale lock is ever left behind to clean up. Like
 * every POSIX lock this is meant for a local file system; on a network file system it is only as
 * good as that system's locking.
 */
import { mkdir, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { ConfigError, ErrorCode, type Logger } from '@herald/protocol'
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, ensurePrivateFile, tightenIfPresent } from '@herald/node-runtime'

/** Permissions of the data directory the broker creates: its owner only. */
export const DATA_DIR_MODE = PRIVATE_DIR_MODE
/** Permissions of every file the broker keeps there (events.db, -wal, -shm, broker.lock). */
export const DATA_FILE_MODE = PRIVATE_FILE_MODE
/** The lock file's name inside the data directory. */
export const LOCK_FILE = 'broker.lock'

/** A held data directory: release() ends the lock (idempotent). */
export interface DataDirLock {
  readonly dir: string
  release (): void
}

/**
 * Takes the data directory `dir` for one broker: creates it (0700) if missing, locks it, and makes
 * the database files `files` (names in `dir`, with their -wal and -shm) private before anyone opens
 * them. An existing directory open to others is left as it is (it may be shared on purpose, like
 * /var/lib) with a warning; the files in it are private either way. Throws ConfigError
 * DATA_DIR_LOCKED if another broker holds the directory, having changed nothing in it.
 */
export async function lockDataDir (dir: string, files: readonly string[], logger: Logger): Promise<DataDirLock> {
  // [BROKER-DIR-1] mkdir's mode applies to directories it creates; the umask can only narrow it
  await mkdir(dir, { recursive: true, mode: DATA_DIR_MODE })
  const st = await stat(dir)
  if (!st.isDirectory()) throw new ConfigError(`data directory ${dir} is not a directory`)
  // [BROKER-LOCK-1] before any other file in the directory is touched
  const lockPath = join(dir, LOCK_FILE)
  await ensurePrivateFile(lockPath)
  let db: Database.Database | null = null
  try {
    db = new Database(lockPath, { timeout: 0 })
    db.pragma('journal_mode = MEMORY') // no -journal file beside it: the lock writes nothing
    db.pragma('locking_mode = EXCLUSIVE')
    db.exec('BEGIN EXCLUSIVE')
  } catch (err) {
    db?.close()
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new ConfigError(`data directory ${resolve(dir)} is in use by another broker (it holds ${LOCK_FILE}); stop that one, or give this one its own data directory`, { code: ErrorCode.DATA_DIR_LOCKED, cause: err })
    }
    throw new ConfigError(`data directory ${dir}: cannot lock ${lockPath}: ${(err as Error).message}`, { cause: err })
  }
  const held = db
  let released = false
  const lock: DataDirLock = {
    dir,
    release () {
      if (released) return
      released = true
      held.close()
    }
  }
  try {
    if ((st.mode & 0o077) !== 0) {
      logger.warn({ dir, mode: `0${(st.mode & 0o777).toString(8)}` }, 'the data directory is open to other users; its files are kept private (0600), but consider chmod 700')
    }
    // [BROKER-DIR-1] the database files, and what an older broker left behind, are private
    for (const f of files) {
      await ensurePrivateFile(join(dir, f))
      await tightenIfPresent(join(dir, `${f}-wal`))
      await tightenIfPresent(join(dir, `${f}-shm`))
      await tightenIfPresent(join(dir, `${f}-journal`))
    }
  } catch (err) {
    lock.release()
    throw err
  }
  return lock
}

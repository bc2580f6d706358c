/**
 * Private files ([BROKER-DIR-1], [FILES-PRIVATE-1] in docs/architecture.md, "Files and locks"):
 * the files that hold events or positions are their owner's only (0600), and so is a directory
 * Herald creates for them (0700). SQLite creates files 0644 (less the umask) and gives the -wal
 * and -shm files it makes the database file's mode, so the database file is created (or
 * tightened) here before SQLite opens it.
 */
import { chmodSync, closeSync, fchmodSync, fstatSync, openSync, statSync } from 'node:fs'
import { chmod, mkdir, open, stat } from 'node:fs/promises'
import { ConfigError, type Logger } from '@herald/protocol'

/** Permissions of a data directory Herald creates: its owner only. */
export const PRIVATE_DIR_MODE = 0o700
/** Permissions of every file holding events or positions (a database, its -wal, -shm, -journal). */
export const PRIVATE_FILE_MODE = 0o600
/** The files SQLite keeps beside a database file. */
const SQLITE_SIDE_FILES = ['-wal', '-shm', '-journal'] as const

/**
 * Creates `path` with PRIVATE_FILE_MODE if missing, and sets that mode if it exists: SQLite itself
 * creates files 0644, and gives the -wal and -shm files it makes the database file's permissions.
 */
export async function ensurePrivateFile (path: string): Promise<void> {
  const handle = await open(path, 'a', PRIVATE_FILE_MODE)
  try {
    await handle.chmod(PRIVATE_FILE_MODE)
  } finally {
    await handle.close()
  }
}

/** Sets PRIVATE_FILE_MODE on `path` if it exists. */
export async function tightenIfPresent (path: string): Promise<void> {
  try {
    await chmod(path, PRIVATE_FILE_MODE)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}

/**
 * Makes the SQLite database `path` private before SQLite opens it: creates it 0600 if missing,
 * and sets 0600 on it and on its -wal, -shm and -journal files if they are open to group or others
 * (a file already private is not touched, so one the user does not own but may write still opens).
 * SQLite's names for a database in memory or a temporary one (`:memory:`, '') have no file.
 */
export function ensurePrivateSqliteFileSync (path: string): void {
  if (path === '' || path === ':memory:') return
  const fd = openSync(path, 'a', PRIVATE_FILE_MODE)
  try {
    if ((fstatSync(fd).mode & 0o077) !== 0) fchmodSync(fd, PRIVATE_FILE_MODE)
  } finally {
    closeSync(fd)
  }
  for (const side of SQLITE_SIDE_FILES) {
    try {
      if ((statSync(`${path}${side}`).mode & 0o077) !== 0) chmodSync(`${path}${side}`, PRIVATE_FILE_MODE)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
  }
}

/**
 * Creates the directory `dir` (and missing parents) with PRIVATE_DIR_MODE, whatever the umask. An
 * existing directory open to others is left as it is (it may be shared on purpose, like /var/lib)
 * with a warning naming `what`; the files kept in it are private either way. Throws ConfigError if
 * `dir` is not a directory.
 */
export async function ensurePrivateDir (dir: string, what: string, logger: Logger): Promise<void> {
  // mkdir's mode applies to directories it creates; the umask can only narrow it
  const created = await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE })
  const st = await stat(dir)
  if (!st.isDirectory()) throw new ConfigError(`${what} ${dir} is not a directory`)
  if (created === undefined && (st.mode & 0o077) !== 0) {
    logger.warn({ dir, mode: `0${(st.mode & 0o777).toString(8)}` }, `the ${what} is open to other users; its files are kept private (0600), but consider chmod 700`)
  }
}

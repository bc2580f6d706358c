/**
 * A throwaway PostgreSQL cluster for the store and cluster tests: `initdb` in a temp directory,
 * `pg_ctl` on a free loopback port, removed by `remove()`. fsync stays on and synchronous_commit is
 * on (the defaults), so a test measures and proves what a deployment gets.
 *
 * initdb refuses to run as root: as root, the binaries run as the `postgres` user (runuser), which
 * Debian's postgresql package creates. The binaries come from PATH or /usr/lib/postgresql/<v>/bin.
 */
import { execFile } from 'node:child_process'
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { PREREQUISITES, missingPrerequisites, onPath, postgresBinDirs, prerequisitesMessage } from './prerequisites.mjs'
import { freePort } from './ports.js'

const run = promisify(execFile)

/** A running test cluster. */
export interface PostgresCluster {
  readonly port: number
  /** The URL of database `db` (default `herald`) as user `herald`, no password (trust on loopback). */
  url (db?: string): string
  /** A new empty database; returns its URL. */
  createDatabase (name: string): Promise<string>
  /** `pg_ctl stop -m immediate` (a crash: no checkpoint) or `fast`. */
  stop (mode?: 'immediate' | 'fast'): Promise<void>
  /** Starts it again on the same port and data directory. */
  start (): Promise<void>
  /** Stops it (if running) and deletes its directory. */
  remove (): Promise<void>
}

function binDir (): string {
  const missing = missingPrerequisites(process.env.PATH, PREREQUISITES.filter((p) => p.package === 'postgresql'))
  if (missing.length > 0) throw new Error(prerequisitesMessage(missing) ?? 'postgresql is missing')
  for (const dir of postgresBinDirs()) if (onPath('initdb', dir)) return dir
  return '' // on PATH
}

/** Starts a fresh cluster; throws the prerequisites line when PostgreSQL is not installed. */
export async function startPostgres (): Promise<PostgresCluster> {
  const bin = binDir()
  const tool = (name: string): string => bin === '' ? name : join(bin, name)
  const root = process.getuid?.() === 0
  const dir = await mkdtemp(join(tmpdir(), 'herald-pg-'))
  const data = join(dir, 'data')
  if (root) {
    const { stdout } = await run('id', ['-u', 'postgres'])
    const { stdout: g } = await run('id', ['-g', 'postgres'])
    await chown(dir, Number(stdout.trim()), Number(g.trim()))
  }
  await chmod(dir, 0o700)
  const as = async (cmd: string, args: string[]): Promise<void> => {
    if (root) await run('runuser', ['-u', 'postgres', '--', cmd, ...args], { cwd: dir })
    else await run(cmd, args, { cwd: dir })
  }
  const port = await freePort()
  await as(tool('initdb'), ['-D', data, '-A', 'trust', '-U', 'herald', '-E', 'UTF8', '--no-instructions'])
  const start = async (): Promise<void> => {
    await as(tool('pg_ctl'), ['-D', data, '-l', join(dir, 'log'), '-w', '-t', '60', '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on -c synchronous_commit=on`, 'start'])
  }
  let running = false
  await start()
  running = true
  const url = (db = 'herald'): string => `postgres://herald@127.0.0.1:${port}/${db}`
  const admin = new pg.Client({ connectionString: url('postgres') })
  await admin.connect()
  await admin.query('CREATE DATABASE herald')
  await admin.end()
  return {
    port,
    url,
    async createDatabase (name: string): Promise<string> {
      const c = new pg.Client({ connectionString: url('postgres') })
      await c.connect()
      try {
        await c.query(`CREATE DATABASE ${name}`)
      } finally {
        await c.end()
      }
      return url(name)
    },
    async stop (mode = 'immediate'): Promise<void> {
      await as(tool('pg_ctl'), ['-D', data, '-m', mode, '-w', 'stop'])
      running = false
    },
    async start (): Promise<void> {
      await start()
      running = true
    },
    async remove (): Promise<void> {
      if (running) await as(tool('pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {})
      running = false
      await rm(dir, { recursive: true, force: true })
    }
  }
}

// A throwaway PostgreSQL cluster for the cluster scenario (s11): initdb in a temp directory, pg_ctl
// on a free loopback port, removed by remove(). fsync and synchronous_commit on (the defaults). As
// root the binaries run as the `postgres` user (initdb refuses root). The same steps as
// test/support/postgres.ts, in plain JavaScript for the bench.
import { execFile } from 'node:child_process'
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { onPath, postgresBinDirs } from '../../test/support/prerequisites.mjs'
import { freePort } from './proc.mjs'

const run = promisify(execFile)

/** The directory of initdb and pg_ctl ('' when on PATH), or null if PostgreSQL is not installed. */
export function postgresBin () {
  for (const dir of postgresBinDirs()) if (onPath('initdb', dir)) return dir
  return onPath('initdb', process.env.PATH) ? '' : null
}

export async function startPostgres () {
  const bin = postgresBin()
  if (bin === null) throw new Error('PostgreSQL is not installed (apt-get install postgresql)')
  const tool = (n) => bin === '' ? n : join(bin, n)
  const root = process.getuid?.() === 0
  const dir = await mkdtemp(join(tmpdir(), 'herald-bench-pg-'))
  if (root) {
    const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim())
    const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim())
    await chown(dir, uid, gid)
  }
  await chmod(dir, 0o700)
  const as = (cmd, args) => root ? run('runuser', ['-u', 'postgres', '--', cmd, ...args], { cwd: dir }) : run(cmd, args, { cwd: dir })
  const data = join(dir, 'data')
  const port = await freePort()
  await as(tool('initdb'), ['-D', data, '-A', 'trust', '-U', 'herald', '-E', 'UTF8', '--no-instructions'])
  await as(tool('pg_ctl'), ['-D', data, '-l', join(dir, 'log'), '-w', '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200`, 'start'])
  const url = (db) => `postgres://herald@127.0.0.1:${port}/${db}`
  let databases = 0
  return {
    /** A new empty database; its URL. */
    async database () {
      const name = `bench${++databases}`
      const c = new pg.Client({ connectionString: url('postgres') })
      await c.connect()
      await c.query(`CREATE DATABASE ${name}`)
      await c.end()
      return url(name)
    },
    async remove () {
      await as(tool('pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {})
      await rm(dir, { recursive: true, force: true })
    }
  }
}

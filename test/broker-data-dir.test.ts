/**
 * The broker's data directory: private files ([BROKER-DIR-1]), one broker per directory
 * ([BROKER-LOCK-1]), and a busy port that fails with one line before the store is opened.
 */
import { spawn } from 'node:child_process'
import { chmod, mkdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startBrokerServer } from '@herald/broker'
import { ConfigError, ErrorCode, type Logger } from '@herald/protocol'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { startBrokerProcess, writeTestSite } from './support/processes.js'
import { testSite } from './support/site.js'

const ROOT = join(import.meta.dirname, '..')
const CLI = join(ROOT, 'cli', 'bin', 'herald.js')

async function modeOf (path: string): Promise<string> {
  return `0${((await stat(path)).mode & 0o777).toString(8)}`
}

/** Runs `herald broker` to its exit; returns the exit code, stdout and stderr. `h` kills it if it runs on. */
function runBroker (h: Harness, site: string, data: string, port: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'broker', '--site', site, '--data', data, '--port', String(port), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] })
    h.onClose(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    // a broker that starts instead of refusing would run on: the test's timeout then fails it
    child.once('close', (code) => { resolve({ code, stdout, stderr }) })
  })
}

/** What tells whether a file was touched: inode, size and modification time. */
async function fingerprint (path: string): Promise<string> {
  const s = await stat(path)
  return `${s.ino}:${s.size}:${s.mtimeMs}`
}

describe('the data directory', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('is created 0700 with events.db, its -wal and -shm and broker.lock 0600, whatever the umask lets through', async () => {
    h = await Harness.create()
    const old = process.umask(0o022)
    h.onClose(async () => { process.umask(old) })
    const dataDir = join(h.dir, 'new', 'data')
    const server = await startBrokerServer({ site: await testSite(), dataDir, port: 0 })
    h.onClose(() => server.close())
    const svc = await h.service(server.url, 'svc-a', { memoryOnly: true })
    const c = await collect(h.client(server.url, 'alice', 'app'), 'readings')
    await svc.raise('readings', { secret: 'private data' })
    await c.until(1)
    expect(await modeOf(dataDir)).toBe('0700')
    for (const f of ['events.db', 'events.db-wal', 'events.db-shm', 'broker.lock']) {
      expect([f, await modeOf(join(dataDir, f))]).toEqual([f, '0600'])
    }
  })

  it('an existing directory open to others is left as it is, with a warning; the files in it are made 0600', async () => {
    h = await Harness.create()
    const dataDir = join(h.dir, 'old')
    const first = await startBrokerServer({ site: await testSite(), dataDir, port: 0 })
    const svc = await h.service(first.url, 'svc-a', { memoryOnly: true })
    await svc.raise('readings', { i: 1 })
    await svc.drained()
    await svc.close()
    await first.close()
    // as an older broker left it
    await chmod(dataDir, 0o755)
    await chmod(join(dataDir, 'events.db'), 0o644)
    const warnings: string[] = []
    const logger: Logger = { debug () {}, info () {}, error () {}, warn (_o, msg) { warnings.push(msg ?? '') } }
    const server = await startBrokerServer({ site: await testSite(), dataDir, port: 0, logger })
    h.onClose(() => server.close())
    expect(await modeOf(dataDir)).toBe('0755')
    expect(await modeOf(join(dataDir, 'events.db'))).toBe('0600')
    expect(warnings).toContain('the data directory is open to other users; its files are kept private (0600), but consider chmod 700')
    expect(server.broker.store.count()).toBe(1)
  })

  it('is held by one broker: a second one in the same process gets DATA_DIR_LOCKED, and the directory is free again after close()', async () => {
    h = await Harness.create()
    const dataDir = join(h.dir, 'shared')
    const site = await testSite()
    const first = await startBrokerServer({ site, dataDir, port: 0 })
    const err = await startBrokerServer({ site, dataDir, port: 0 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).code).toBe(ErrorCode.DATA_DIR_LOCKED)
    expect((err as ConfigError).message).toContain(`data directory ${dataDir} is in use by another broker`)
    // the first one still works
    const svc = await h.service(first.url, 'svc-a', { memoryOnly: true })
    await svc.raise('readings', { i: 1 })
    await svc.drained()
    await svc.close()
    await first.close()
    const again = await startBrokerServer({ site, dataDir, port: 0 })
    h.onClose(() => again.close())
    expect(again.broker.store.count()).toBe(1)
  })
})

describe('herald broker refuses at once, with one line and exit code 2', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('on a data directory another broker holds, before touching its store; after that broker is SIGKILLed the directory is free', async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const dataDir = join(h.dir, 'data')
    const first = await startBrokerProcess(site, dataDir, 0)
    h.onClose(() => first.proc.kill())
    const files = ['events.db', 'events.db-wal', 'events.db-shm']
    const before = await Promise.all(files.map((f) => fingerprint(join(dataDir, f))))
    const second = await runBroker(h, site, dataDir, 0)
    expect(second.code).toBe(2)
    expect(second.stdout).toBe('')
    expect(second.stderr).toBe(`herald: data directory ${dataDir} is in use by another broker (it holds broker.lock); stop that one, or give this one its own data directory [DATA_DIR_LOCKED]\n`)
    expect(await Promise.all(files.map((f) => fingerprint(join(dataDir, f))))).toEqual(before)
    // the lock is the kernel's: it dies with the process, leaving nothing stale behind
    await first.proc.kill()
    const third = await startBrokerProcess(site, dataDir, 0)
    h.onClose(() => third.proc.kill())
  })

  it('on a busy port, naming it and --port, without opening a store', async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const first = await startBrokerProcess(site, join(h.dir, 'first'), 0)
    h.onClose(() => first.proc.kill())
    const dataDir = join(h.dir, 'second')
    await mkdir(dataDir)
    const second = await runBroker(h, site, dataDir, first.port)
    expect(second.code).toBe(2)
    expect(second.stderr).toBe(`herald: port ${first.port} on 127.0.0.1 is in use (another broker running?): choose another with --port [ADDRESS_IN_USE]\n`)
    // the store was never opened: its file is still the empty one the lock step made, with no WAL
    expect((await stat(join(dataDir, 'events.db'))).size).toBe(0)
    await expect(stat(join(dataDir, 'events.db-wal'))).rejects.toMatchObject({ code: 'ENOENT' })
    // and the first broker runs on
    expect(first.proc.child.exitCode).toBeNull()
  })
})

describe('herald demo (npm start) on a busy port', () => {
  it('prints the hint in one line and exits 2, without a stack trace from the log file', async () => {
    const h = await Harness.create()
    try {
      const site = await writeTestSite(h.dir)
      const busy = await startBrokerProcess(site, join(h.dir, 'busy'), 0)
      h.onClose(() => busy.proc.kill())
      const { code, stderr } = await new Promise<{ code: number | null, stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [CLI, 'demo', '--port', String(busy.port), '--data', join(h.dir, 'demo'), '--no-summary'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
        h.onClose(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
        let err = ''
        child.stderr.on('data', (d: Buffer) => { err += d.toString() })
        child.once('close', (c) => { resolve({ code: c, stderr: err }) })
      })
      expect(code).toBe(2)
      expect(stderr).toBe(`herald: port ${busy.port} on 127.0.0.1 is in use (another broker running?); pick another with --port (npm start -- --port 1884) [ADDRESS_IN_USE]\n`)
    } finally {
      await h.close()
    }
  })
})

describe('herald demo (npm start) twice on one data directory', () => {
  it('the second says the directory is held and how to run it apart, in one line, exit 2', async () => {
    const h = await Harness.create()
    try {
      const site = await writeTestSite(h.dir)
      const data = join(h.dir, 'demo')
      // a broker holding the demo's broker directory, as a running demo would
      const first = await startBrokerProcess(site, join(data, 'broker'), 0)
      h.onClose(() => first.proc.kill())
      const { code, stderr } = await new Promise<{ code: number | null, stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [CLI, 'demo', '--port', '0', '--data', data, '--no-summary'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
        h.onClose(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
        let err = ''
        child.stderr.on('data', (d: Buffer) => { err += d.toString() })
        child.once('close', (c) => { resolve({ code: c, stderr: err }) })
      })
      expect(code).toBe(2)
      expect(stderr).toBe(`herald: data directory ${join(data, 'broker')} is in use by another broker: another herald demo running? Stop it, or run this one apart (npm start -- --data .herald-data-2 --port 1884) [DATA_DIR_LOCKED]\n`)
    } finally {
      await h.close()
    }
  })
})

/**
 * Real child processes for fault tests: a broker run by the `herald` CLI, and service and client
 * endpoint scripts (test/fixtures/*.mjs, run against the built packages). Killed with SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { TimeoutError } from '@herald/protocol'
import { TEST_SITE_DOC } from './site.js'

const ROOT = join(import.meta.dirname, '..', '..')
// the installed `herald` command, as users run it
const CLI = join(ROOT, 'cli', 'bin', 'herald.js')

/** A child process whose stdout lines can be awaited. */
export class Proc {
  readonly lines: string[] = []
  private readonly waiters: Array<{ test: (line: string) => boolean, resolve: (line: string) => void }> = []
  readonly exited: Promise<number | null>
  /** Resolves when every line the process wrote has been read. */
  readonly drained: Promise<void>
  stderr = ''

  constructor (readonly child: ChildProcess, readonly name: string) {
    const rl = createInterface({ input: child.stdout! })
    rl.on('line', (line) => {
      this.lines.push(line)
      for (let i = this.waiters.length - 1; i >= 0; i--) {
        const w = this.waiters[i]!
        if (w.test(line)) {
          this.waiters.splice(i, 1)
          w.resolve(line)
        }
      }
    })
    child.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-20_000) })
    this.exited = new Promise((resolve) => { child.once('exit', (code) => { resolve(code) }) })
    this.drained = new Promise((resolve) => { rl.once('close', () => { resolve() }) })
  }

  /** Resolves with the first line (already printed or to come) that passes `test`. */
  waitLine (test: (line: string) => boolean, timeoutMs = 120_000): Promise<string> {
    const seen = this.lines.find(test)
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new TimeoutError(`${this.name}: no matching line within ${timeoutMs} ms; stderr: ${this.stderr.slice(-2000)}`)) }, timeoutMs)
      this.waiters.push({ test, resolve: (l) => { clearTimeout(timer); resolve(l) } })
      void this.exited.then((code) => { clearTimeout(timer); reject(new Error(`${this.name} exited (${code}) before the line came; stderr: ${this.stderr.slice(-2000)}`)) })
    })
  }

  /** SIGKILL, and wait until it is gone and all it wrote has been read. */
  async kill (): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
    await this.exited
    await this.drained
  }
}

/** Writes the test site as a JSON file and returns its path. */
export async function writeTestSite (dir: string): Promise<string> {
  const path = join(dir, 'site.json')
  await writeFile(path, JSON.stringify(TEST_SITE_DOC))
  return path
}

/** Starts `herald broker` (with more CLI flags in `extraArgs`) and waits until it listens. Returns the process and its URL. */
export async function startBrokerProcess (site: string, dataDir: string, port: number, extraArgs: readonly string[] = []): Promise<{ proc: Proc, url: string, port: number }> {
  const child = spawn(process.execPath, [CLI, 'broker', '--site', site, '--data', dataDir, '--port', String(port), '--log-level', 'warn', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] })
  const proc = new Proc(child, 'broker')
  const line = await proc.waitLine((l) => l.startsWith('herald broker listening on '))
  const url = line.slice('herald broker listening on '.length)
  return { proc, url, port: Number(new URL(url).port) }
}

/** Starts a fixture script with arguments passed as JSON in argv[2]; `stdin: true` gives it a pipe to write commands to. */
export function startFixture (script: string, args: object, options: { stdin?: boolean } = {}): Proc {
  const child = spawn(process.execPath, [join(ROOT, 'test', 'fixtures', script), JSON.stringify(args)], { stdio: [options.stdin === true ? 'pipe' : 'ignore', 'pipe', 'pipe'] })
  return new Proc(child, script)
}

/** Starts `herald gateway --config <file>` and waits until it runs. */
export async function startGatewayProcess (config: string): Promise<Proc> {
  const child = spawn(process.execPath, [CLI, 'gateway', '--config', config, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const proc = new Proc(child, 'gateway')
  await proc.waitLine((l) => l.startsWith('herald gateway '))
  return proc
}

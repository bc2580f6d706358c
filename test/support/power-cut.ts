/**
 * Power cuts of a client machine, emulated on real files: a child process runs with
 * test/support/power-cut-preload.c preloaded, which copies each file of its directory to `.synced/`
 * whenever an fsync or fdatasync of it returns. `cut()` then puts the directory back to those copies
 * (a file never synced is removed): what the disk holds after a power cut that drops every write not
 * yet fsync'd. A real one may also keep some later writes; SQLite's WAL checksums then keep a prefix
 * of the frames, i.e. the state after some later commit, so the synced state is the deepest rollback.
 */
import { execFileSync, spawn } from 'node:child_process'
import { copyFileSync, mkdirSync, readdirSync, rmSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { Proc } from './processes.js'

const ROOT = join(import.meta.dirname, '..', '..')

/** Compiles the preload library into `dir` with the C compiler (`$CC`, else `cc`) and returns its path. */
export function buildPowerCutLibrary (dir: string): string {
  const out = join(dir, 'power-cut.so')
  execFileSync(process.env.CC ?? 'cc', ['-shared', '-fPIC', '-O2', '-Wall', '-Werror', '-o', out, join(ROOT, 'test', 'support', 'power-cut-preload.c'), '-ldl'], { stdio: 'pipe' })
  return out
}

/** A directory whose files lose every write not fsync'd when `cut()` is called. */
export class PowerCutDir {
  constructor (readonly path: string, readonly library: string) {
    mkdirSync(join(path, '.synced'), { recursive: true })
  }

  /** Starts a fixture script with the library preloaded, watching this directory. */
  start (script: string, args: object): Proc {
    const child = spawn(process.execPath, [join(ROOT, 'test', 'fixtures', script), JSON.stringify(args)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LD_PRELOAD: this.library, HERALD_POWER_CUT_DIR: this.path }
    })
    return new Proc(child, script)
  }

  /** The power cut: call after the process using the directory was SIGKILLed. Returns the files kept. */
  cut (): string[] {
    const synced = join(this.path, '.synced')
    const kept: string[] = []
    for (const name of readdirSync(this.path)) {
      if (name.startsWith('.')) continue
      if (existsSync(join(synced, name))) {
        copyFileSync(join(synced, name), join(this.path, name))
        kept.push(name)
      } else {
        rmSync(join(this.path, name))
      }
    }
    for (const name of readdirSync(synced)) {
      if (!name.endsWith('.tmp') && !existsSync(join(this.path, name))) copyFileSync(join(synced, name), join(this.path, name))
    }
    return kept
  }
}

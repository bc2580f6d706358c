// Child processes for the benchmark: spawn, read JSON lines with a deadline, send commands, kill.
// Every child this module starts is killed (SIGKILL) when the harness exits, also on failure.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { createInterface } from 'node:readline'

const children = new Set()

function killAll () {
  for (const c of children) {
    try { process.kill(c.pid, 'SIGKILL') } catch { /* already gone */ }
  }
  children.clear()
}
process.on('exit', killAll)
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll()
    process.exit(130)
  })
}

/** A scenario that ran past its deadline or whose child failed. */
export class BenchError extends Error {}

/** A free TCP port on 127.0.0.1 (listen on 0, close). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => { resolve(port) })
    })
  })
}

/** Resident set size of a process in bytes (Linux /proc), or null. */
export function rssOf (pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

/** CPU time (user + system) a process used so far, in ms (Linux /proc, 10 ms ticks), or null. */
export function cpuOf (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // fields 14 and 15 (utime, stime) are 11 and 12 after the command name and state
    return (Number(f[11]) + Number(f[12])) * 10
  } catch {
    return null
  }
}

/** Monotonic time in ms; process.hrtime is CLOCK_MONOTONIC, shared by every process of the machine. */
export function nowMs () {
  return Number(process.hrtime.bigint()) / 1e6
}

/**
 * A child process that speaks JSON lines on stdout (other stdout lines are kept as text) and
 * takes commands as lines on stdin.
 */
export class Child {
  constructor (name, command, args, options = {}) {
    this.name = name
    this.lines = []
    this.waiters = []
    this.stderr = ''
    this.exited = null
    this.proc = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...options.env }, cwd: options.cwd })
    this.pid = this.proc.pid
    children.add(this.proc)
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      let msg = line
      if (line.startsWith('{')) {
        try { msg = JSON.parse(line) } catch { /* plain text */ }
      }
      this.lines.push(msg)
      this.#check()
    })
    this.proc.stderr.on('data', (d) => {
      this.stderr += d.toString()
      if (this.stderr.length > 20_000) this.stderr = this.stderr.slice(-10_000)
    })
    this.proc.on('exit', (code, signal) => {
      children.delete(this.proc)
      this.exited = { code, signal }
      this.#check()
    })
    this.proc.stdin.on('error', () => { /* the child may be gone */ })
  }

  #check () {
    for (const w of [...this.waiters]) {
      const i = this.lines.findIndex(w.pred)
      if (i >= 0) {
        const [msg] = this.lines.splice(i, 1)
        this.waiters.splice(this.waiters.indexOf(w), 1)
        clearTimeout(w.timer)
        w.resolve(msg)
      } else if (this.exited !== null) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        clearTimeout(w.timer)
        w.reject(new BenchError(`${this.name} exited (${this.exited.code ?? this.exited.signal}) while waiting for ${w.what}${this.#tail()}`))
      }
    }
  }

  #tail () {
    const t = this.stderr.trim().split('\n').slice(-8).join('\n')
    return t === '' ? '' : `\n--- ${this.name} stderr ---\n${t}`
  }

  /** Waits for a line matching `pred` (a function, or a key every JSON message with it matches). */
  waitFor (pred, what, deadline) {
    const p = typeof pred === 'function' ? pred : (m) => typeof m === 'object' && m !== null && pred in m
    return new Promise((resolve, reject) => {
      const ms = Math.max(0, deadline - Date.now())
      const w = { pred: p, what, resolve, reject, timer: null }
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        reject(new BenchError(`${this.name}: no ${what} within the scenario's deadline${this.#tail()}`))
      }, ms)
      this.waiters.push(w)
      this.#check()
    })
  }

  send (line) {
    this.proc.stdin.write(`${line}\n`)
  }

  rss () {
    return rssOf(this.pid)
  }

  cpu () {
    return cpuOf(this.pid)
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it exited. */
  async stop (graceMs = 3000) {
    if (this.exited !== null) return
    const done = new Promise((resolve) => { this.proc.once('exit', resolve) })
    try { this.proc.kill('SIGTERM') } catch { /* gone */ }
    const t = setTimeout(() => { try { this.proc.kill('SIGKILL') } catch { /* gone */ } }, graceMs)
    await done
    clearTimeout(t)
  }

  kill () {
    if (this.exited !== null) return Promise.resolve()
    const done = new Promise((resolve) => { this.proc.once('exit', resolve) })
    try { this.proc.kill('SIGKILL') } catch { /* gone */ }
    return done
  }
}

/** A node child running one of bench/procs/*.mjs with a JSON argument. */
export function nodeChild (name, script, arg, { nodeArgs = [], env = {} } = {}) {
  return new Child(name, process.execPath, [...nodeArgs, script, JSON.stringify(arg)], { env })
}

/** Stops every given child (SIGKILL), ignoring ones already gone. */
export async function killEach (list) {
  await Promise.all(list.filter((c) => c !== null && c !== undefined).map((c) => c.kill()))
}

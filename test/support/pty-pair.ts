/**
 * A pair of pseudo-terminals joined like a null-modem cable, made by a real `socat` process: the
 * simulator opens one end, the gateway the other. Killing socat pulls the cable out (both ends get
 * EIO); `plugIn()` starts a new socat on the same two paths.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { waitFor } from '@herald/protocol/testing'

export class PtyPair {
  readonly deviceEnd: string
  readonly gatewayEnd: string
  #socat: ChildProcess | null = null

  constructor (dir: string, name = 'tty') {
    this.deviceEnd = join(dir, `${name}-device`)
    this.gatewayEnd = join(dir, `${name}-gateway`)
  }

  /** Starts socat and waits until both ends exist. */
  async plugIn (): Promise<void> {
    const socat = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${this.deviceEnd}`, `pty,raw,echo=0,link=${this.gatewayEnd}`], { stdio: ['ignore', 'ignore', 'pipe'] })
    let log = ''
    socat.stderr?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-4000) })
    this.#socat = socat
    await waitFor(() => log.includes('starting data transfer loop') && existsSync(this.deviceEnd) && existsSync(this.gatewayEnd), `socat pty pair (${log})`)
  }

  /** Kills socat: both ends go away. */
  async unplug (): Promise<void> {
    const socat = this.#socat
    this.#socat = null
    if (socat === null || socat.exitCode !== null) return
    const gone = new Promise<void>((resolve) => { socat.once('exit', () => { resolve() }) })
    socat.kill('SIGTERM')
    await gone
  }
}

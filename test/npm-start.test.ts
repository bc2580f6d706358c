/**
 * The README's first command line, `npm start`: within seconds the console client prints events
 * raised from simulated device reports, and Ctrl-C (SIGINT) stops everything cleanly.
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { Proc } from './support/processes.js'

const ROOT = join(import.meta.dirname, '..')

describe('npm start', () => {
  it('runs broker, simulated devices, gateway and console client; events reach the console; SIGINT exits 0', async () => {
    const dir = await tempDir('herald-start-')
    let proc: Proc | undefined
    try {
      // the README's command, with a free port and a temp data directory so it cannot collide
      const child = spawn('npm', ['start', '--', '--port', '0', '--ws-port', '0', '--data', dir.path, '--no-summary'], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NO_COLOR: '1' },
        // its own process group, like a job in a terminal: Ctrl-C signals the whole group
        detached: true
      })
      proc = new Proc(child, 'npm start')
      const p = proc
      // an event line: time, service, event, position, age, payload
      const isEvent = (l: string): boolean => /^\d\d:\d\d:\d\d\.\d{3} plant-1 \S+ #\d+ /.test(l)
      const first = await p.waitLine(isEvent, 90_000)
      expect(first).toMatch(/ (readings|temperature|heater|door-state|pump) #\d+ /)
      // every device of the default fleet reports
      for (const model of ['thermostat', 'door', 'pump']) {
        await p.waitLine((l) => isEvent(l) && l.includes(' readings ') && l.includes(`"model":"${model}"`), 30_000)
      }
      await waitFor(() => p.stderr.includes('herald demo: broker mqtt://127.0.0.1:'), 'the demo says where its broker is')
      // Ctrl-C: SIGINT to the whole process group (npm, the shell, the demo); the demo closes everything
      process.kill(-(child.pid ?? 0), 'SIGINT')
      // the demo closes the client, gateway, simulator and broker, in that order, says so, and exits 0
      await waitFor(() => p.stderr.includes('herald demo: stopped cleanly'), 'the demo stopping cleanly', 30_000)
      expect(p.stderr).toContain('herald demo: stopping')
      await p.exited
      await p.drained
      // npm itself, signalled too, ends by the signal or with 0
      expect(p.child.exitCode === 0 || p.child.signalCode === 'SIGINT').toBe(true)
    } catch (err) {
      process.stderr.write(`npm start output:\n${proc?.lines.slice(-20).join('\n') ?? ''}\n${proc?.stderr ?? ''}\n`)
      throw err
    } finally {
      if (proc !== undefined && proc.child.exitCode === null && proc.child.signalCode === null) process.kill(-(proc.child.pid ?? 0), 'SIGKILL')
      await dir.remove()
    }
  }, 180_000)
})

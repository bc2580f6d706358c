/**
 * Dead letters end to end ([CLI-DEAD-1..7]) with real processes: a `herald broker` process, a service
 * endpoint raising, and a client endpoint process whose handler always throws for some events, with
 * `maxAttempts: 3`. The poison event is dead-lettered after 3 attempts and later events are handled;
 * the dead letter is in the positions file and `herald dead-letters` lists, shows, retries and
 * discards it. SIGKILLed between the last attempt and the commit, and at random while events flow:
 * every event is dead-lettered XOR handled, never lost, never silently handled twice; in
 * transactional mode the dead letter and the position commit together in the application's database.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, it, expect, afterEach } from 'vitest'
import { openDeadLetters } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { startBrokerProcess, startFixture, writeTestSite, type Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

function herald (...args: string[]): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** The handled-log lines: [id, i, redelivered]. */
function handledLines (log: string): Array<[string, number, boolean]> {
  if (!existsSync(log)) return []
  return readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => {
    const [id, i, r] = l.split(' ')
    return [id as string, Number(i), r === '1']
  })
}

const lastPos = (p: Proc): number => Number(p.lines.filter((l) => l.startsWith('pos ')).pop()?.slice(4) ?? 0)

describe('dead letters, end to end', { timeout: 240_000 }, () => {
  let h: Harness
  const procs: Proc[] = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill()
    await h.close()
  })

  /** A broker process, a service that raised `n` readings { i }, and the last event's position. */
  async function setup (n: number): Promise<{ url: string, head: number }> {
    h = await Harness.create()
    const broker = await startBrokerProcess(await writeTestSite(h.dir), join(h.dir, 'broker'), 0)
    procs.push(broker.proc)
    const svc = await h.service(broker.url, 'svc-a')
    await Promise.all(Array.from({ length: n }, (_, i) => svc.raise('readings', { i })))
    await svc.drained()
    // the broker's position of the last event: what a client that is through has committed
    const watcher = h.client(broker.url, 'alice', 'watcher')
    let head = 0
    let seen = 0
    await watcher.subscribe('readings', {}, (e) => { head = Math.max(head, e.position); seen++ })
    await waitFor(() => seen >= n, `${n} events at the watcher`, 60_000)
    return { url: broker.url, head }
  }

  it('maxAttempts 3: dead-lettered after 3 attempts, later events handled; SIGKILL between the last attempt and the commit loses nothing; the CLI lists, shows, retries, discards', async () => {
    const N = 30
    const { url, head } = await setup(N)
    const db = join(h.dir, 'positions.db')
    const log = join(h.dir, 'handled.log')
    const args = { url, user: 'alice', password: SECRETS.alice, clientName: 'worker', event: 'readings', mode: 'default', db, log, maxAttempts: 3, poison: 10 }

    // run 1: paused inside the last attempt of the first poison event (i = 9), then SIGKILLed
    const first = startFixture('dead-letter-client.mjs', { ...args, pauseOnLast: true })
    procs.push(first)
    const last = await first.waitLine((l) => l.startsWith('last '))
    await first.kill()
    expect(first.lines.filter((l) => l.startsWith('dead '))).toEqual([])

    // run 2: the event comes again (flagged), gets 3 attempts again ([CLI-DEAD-3]), is dead-lettered
    const second = startFixture('dead-letter-client.mjs', args)
    procs.push(second)
    await second.waitLine((l) => l === 'subscribed')
    // the running client holds the file: the CLI says so (exit 1)
    const busy = herald('dead-letters', 'list', '--positions', db)
    expect(busy.status).toBe(1)
    expect(busy.stderr).toMatch(/in use/)
    await waitFor(() => lastPos(second) >= head, 'the client through every event', 60_000)
    await second.kill()
    const dead = second.lines.filter((l) => l.startsWith('dead ')).map((l) => l.split(' '))
    expect(dead.map((d) => d[2])).toEqual(['3', '3', '3'])
    const poisonIds = dead.map((d) => d[1] as string)
    expect(poisonIds[0]).toBe(last.slice(5))
    const handled = handledLines(log)
    expect(handled.map(([, i]) => i).sort((x, y) => x - y)).toEqual(Array.from({ length: N }, (_, i) => i).filter((i) => i % 10 !== 9))
    expect(handled.some(([id]) => poisonIds.includes(id))).toBe(false)

    // in the positions file
    const file = openDeadLetters(db)
    const letters = file.deadLetters.list()
    file.close()
    expect(letters.map((l) => l.eventId)).toEqual(poisonIds)
    expect(letters.map((l) => l.lastError)).toEqual(['poison 9', 'poison 19', 'poison 29'])

    // the CLI
    const list = herald('dead-letters', 'list', '--positions', db)
    expect(list.status).toBe(0)
    for (const l of letters) expect(list.stdout).toContain(`${l.id}\treadings\t${l.eventId}\treadings\tsvc-a\t3 attempts`)
    expect(list.stdout).toContain('poison 19')
    const json = herald('dead-letters', 'list', '--positions', db, '--json').stdout.trim().split('\n').map((l) => JSON.parse(l) as { eventId: string })
    expect(json.map((j) => j.eventId)).toEqual(poisonIds)
    const show = herald('dead-letters', 'show', String(letters[0]?.id), '--positions', db, '--json')
    expect(show.status).toBe(0)
    expect(JSON.parse(show.stdout)).toMatchObject({ eventId: poisonIds[0], service: 'svc-a', attempts: 3, payload: { i: 9 }, lastError: 'poison 9' })
    expect(herald('dead-letters', 'show', String(letters[0]?.id), '--positions', db).stdout).toContain('payload {"i":9}')
    expect(herald('dead-letters', 'show', '999', '--positions', db).status).toBe(1)
    expect(herald('dead-letters', 'show', 'x', '--positions', db).status).toBe(2)
    expect(herald('dead-letters', 'show', '1', '--positions', join(h.dir, 'nope.db')).status).toBe(2)
    expect(herald('dead-letters', 'list').status).toBe(2)
    expect(herald('dead-letters', 'frobnicate', '--positions', db).status).toBe(2)
    expect(herald('dead-letters', 'discard', String(letters[2]?.id), '--positions', db).status).toBe(0)
    expect(herald('dead-letters', 'retry', String(letters[0]?.id), '--positions', db).status).toBe(0)

    // run 3, the handler fixed: the retried dead letter is handed to it first, flagged; then it is gone
    const third = startFixture('dead-letter-client.mjs', { ...args, heal: true })
    procs.push(third)
    await third.waitLine((l) => l === 'subscribed')
    expect(third.lines.filter((l) => l.startsWith('retried '))).toEqual([`retried ${poisonIds[0]}`])
    await third.kill()
    expect(handledLines(log).filter(([id]) => id === poisonIds[0])).toEqual([[poisonIds[0], 9, true]])
    const after = herald('dead-letters', 'list', '--positions', db, '--json').stdout.trim().split('\n').map((l) => JSON.parse(l) as { eventId: string })
    expect(after.map((j) => j.eventId)).toEqual([poisonIds[1]])
  })

  for (const mode of ['default', 'transactional'] as const) {
    it(`${mode} mode, SIGKILLed at random while events flow: every event dead-lettered XOR handled, none lost, none silently twice`, async () => {
      const N = 400
      const { url, head } = await setup(N)
      const db = join(h.dir, `${mode}.db`)
      const log = join(h.dir, 'handled.log')
      const args = { url, user: 'alice', password: SECRETS.alice, clientName: 'worker', event: 'readings', mode, db, log, maxAttempts: 3, poison: 7 }
      let kills = 0
      for (let run = 0; run < 6; run++) {
        const c = startFixture('dead-letter-client.mjs', args)
        procs.push(c)
        await c.waitLine((l) => l === 'subscribed')
        if (run < 5) {
          // a kill at a moment that varies: after some progress, plus a random delay
          const target = Math.min(head - 1, lastPos(c) + 20 + Math.floor(Math.random() * 40))
          await waitFor(() => lastPos(c) >= target || c.lines.some((l) => l.startsWith('dead ')) && Math.random() < 0.3, 'progress before the kill', 60_000)
          await c.kill()
          kills++
        } else {
          await waitFor(() => lastPos(c) >= head, 'the client through every event', 120_000)
          await c.kill()
        }
      }
      expect(kills).toBe(5)
      const poison = Array.from({ length: N }, (_, i) => i).filter((i) => i % 7 === 6)
      const rest = Array.from({ length: N }, (_, i) => i).filter((i) => i % 7 !== 6)
      if (mode === 'transactional') {
        const d = new Database(db, { readonly: true })
        const effects = d.prepare('SELECT i, COUNT(*) AS c FROM effects GROUP BY i ORDER BY i').all() as Array<{ i: number, c: number }>
        const deadRows = d.prepare('SELECT seq, COUNT(*) AS c FROM herald_positions_dead GROUP BY seq').all() as Array<{ seq: number, c: number }>
        const deadIs = (d.prepare('SELECT payload FROM herald_positions_dead').pluck().all() as Buffer[]).map((p) => (JSON.parse(p.toString('utf8')) as { i: number }).i).sort((x, y) => x - y)
        d.close()
        expect(effects.map((e) => e.i)).toEqual(rest) // the poison ones' rows were rolled back
        expect(effects.filter((e) => e.c !== 1)).toEqual([])
        expect(deadRows.filter((r) => r.c !== 1)).toEqual([])
        expect(deadIs).toEqual(poison)
      } else {
        const file = openDeadLetters(db)
        const letters = file.deadLetters.list()
        file.close()
        const deadIs = letters.map((l) => (JSON.parse(new TextDecoder().decode(l.event.payload)) as { i: number }).i).sort((x, y) => x - y)
        expect(deadIs).toEqual(poison) // each once
        const lines = handledLines(log)
        const seen = new Set<number>()
        const unflaggedDuplicates: number[] = []
        for (const [, i, redelivered] of lines) {
          if (seen.has(i) && !redelivered) unflaggedDuplicates.push(i)
          seen.add(i)
        }
        expect([...seen].sort((x, y) => x - y)).toEqual(rest)
        expect(unflaggedDuplicates).toEqual([])
        expect(lines.length - rest.length).toBeLessThanOrEqual(kills)
      }
    })
  }
})

/**
 * Issue 8, item 3: a broker under a password-guessing attack still lets real endpoints in. A real
 * `herald broker` process on the test site, whose passwords are hashed at load with the default scrypt
 * cost (N=16384, r=8, p=1: tens of ms per check), so every unthrottled guess costs what it would in
 * production. 64 connections, each from its own source address, guess wrong passwords in a loop.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { rawLogin } from '@herald/broker/testing'
import { SCRYPT_DEFAULTS } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { startBrokerProcess, writeTestSite, type Proc } from './support/processes.js'
import { SECRETS, TEST_SITE_DOC } from './support/site.js'

/** CPU seconds (user + system) a process has used so far, from /proc. */
async function cpuSeconds (pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

describe('login throttling against a real broker process', () => {
  let broker: Proc | null = null
  let removeDir: (() => Promise<void>) | null = null
  afterEach(async () => {
    await broker?.kill()
    await removeDir?.()
  })

  it.each([
    ['each from its own source address', (i: number) => `127.0.1.${i + 1}`],
    ['all from one source address', () => '127.0.1.1']
  ])('while 64 connections guess wrong passwords in a loop (%s), a correct login completes in under 500 ms', async (_how, guesserAddress) => {
    // the test site's users have plain passwords, hashed at load with the default (production) cost
    expect(TEST_SITE_DOC.users.every((u) => 'password' in u)).toBe(true)
    expect(SCRYPT_DEFAULTS.N).toBe(16384)
    const dir = await tempDir('herald-throttle-')
    removeDir = dir.remove
    const started = await startBrokerProcess(await writeTestSite(dir.path), join(dir.path, 'data'), 0)
    broker = started.proc
    const port = started.port
    const login = (localAddress: string, user: string, clientName: string, password: string): ReturnType<typeof rawLogin> =>
      rawLogin({ port, localAddress, connect: { clientId: `c/${user}/${clientName}`, username: user, password: Buffer.from(password) } })

    // alice's application has logged in from 127.0.0.2 before the attack
    expect((await login('127.0.0.2', 'alice', 'app', SECRETS.alice)).returnCode).toBe(0)

    const cpu0 = await cpuSeconds(broker.child.pid!)
    const t0 = performance.now()
    let stop = false
    const answers = new Map<string, number>()
    let guesses = 0
    const refusedUnchecked = new Set<number>()
    const guessers = Array.from({ length: 64 }, async (_, i) => {
      // half guess alice's password, half guess names that do not exist
      const user = i % 2 === 0 ? 'alice' : `nobody-${i}`
      for (let n = 0; !stop; n++) {
        const r = await login(guesserAddress(i), user, `guess-${i}`, `wrong-${n}`)
        guesses++
        if (r.returnCode === 3) refusedUnchecked.add(i)
        const k = String(r.returnCode)
        answers.set(k, (answers.get(k) ?? 0) + 1)
      }
    })
    try {
      // correct logins during the attack: alice from her known address, bob from addresses never seen
      const times: number[] = []
      const correctLogins = async (phase: number): Promise<void> => {
        for (let k = 0; k < 5; k++) {
          const a = await login('127.0.0.2', 'alice', 'app', SECRETS.alice)
          const b = await login(`127.0.${phase}.${10 + k}`, 'bob', `app-${phase}-${k}`, SECRETS.bob)
          expect([a.returnCode, b.returnCode]).toEqual([0, 0])
          times.push(a.ms, b.ms)
        }
      }
      // while every guess still costs a check ...
      await waitFor(() => guesses >= 128, 'the guessers under way', 60_000)
      await correctLogins(0)
      console.info(`while the budgets are spent, correct logins took ${times.map((t) => t.toFixed(0)).join(', ')} ms`)
      const burst = `${guesses} guesses in ${((performance.now() - t0) / 1000).toFixed(1)} s, broker CPU ${(((await cpuSeconds(broker.child.pid!)) - cpu0) / ((performance.now() - t0) / 1000)).toFixed(2)} cores`
      // ... and once every guesser has spent its budget
      await waitFor(() => refusedUnchecked.size === 64, 'every guesser refused unchecked', 120_000)
      const cpu1 = await cpuSeconds(broker.child.pid!)
      const t1 = performance.now()
      const guesses1 = guesses
      await correctLogins(2)
      await waitFor(() => guesses - guesses1 >= 64, 'another 64 guesses answered', 60_000)
      const steady = `${guesses - guesses1} guesses in ${((performance.now() - t1) / 1000).toFixed(1)} s, broker CPU ${(((await cpuSeconds(broker.child.pid!)) - cpu1) / ((performance.now() - t1) / 1000)).toFixed(2)} cores`
      const summary = `correct logins took ${times.map((t) => t.toFixed(0)).join(', ')} ms; first ${burst}; then ${steady}; answers ${JSON.stringify(Object.fromEntries(answers))}`
      console.info(summary)
      // The target: a correct login in under 500 ms. The machine that runs the tests is shared (a
      // 2-core box running other test files at the same time), so one login of each ten may be
      // held up by the machine rather than the broker; before throttling each took 0.9 to 3.0 s.
      const sorted = (xs: number[]): number[] => [...xs].sort((x, y) => x - y)
      expect(sorted(times.slice(0, 10))[8], summary).toBeLessThan(500)
      expect(sorted(times.slice(10))[8], summary).toBeLessThan(500)
      expect(Math.max(...times), summary).toBeLessThan(2000)
      expect(answers.get('0') ?? 0, 'no guess got in').toBe(0)
    } finally {
      stop = true
      await Promise.all(guessers)
    }
  }, 180_000)
})

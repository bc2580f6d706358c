/**
 * `herald tail` as an operator runs it: a real child process (the built CLI) against an in-process
 * broker on a real socket, with events raised by a real ServiceEndpoint. Asserts what the operator
 * sees: lines, JSON records, exit codes and messages.
 */
import { spawn } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import type { HeraldEvent } from '@herald/client-endpoint'
import type { ServiceEndpoint } from '@herald/service-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { makeTestCa } from '@herald/node-runtime/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'
import { freePort } from './support/ports.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

/** time shown, service, event, #position, age, rest (markers and payload) */
const LINE = /^(\d\d:\d\d:\d\d\.\d{3}) (\S+) (\S+) #(\d+) (\d+(?:\.\d)?(?:ms|s|m|h|d)) (.*)$/

interface Shown { service: string, event: string, position: number, rest: string }

function parseLine (line: string): Shown {
  const m = LINE.exec(line)
  if (m === null) throw new Error(`not an event line: ${JSON.stringify(line)}`)
  return { service: m[2] as string, event: m[3] as string, position: Number(m[4]), rest: m[6] as string }
}

/** Waits for the exit code and every line written. */
async function finished (p: Proc): Promise<number | null> {
  const code = await p.exited
  await p.drained
  return code
}

/** A port nothing listens on (taken from the OS, then released). */
describe('herald tail', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  /** Starts `herald tail <args>` as alice (password in HERALD_PASSWORD) unless args say otherwise. */
  function tail (args: readonly string[], env: Record<string, string> = {}): Proc {
    const child = spawn(process.execPath, [CLI, 'tail', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', HERALD_LOG_LEVEL: 'warn', HERALD_PASSWORD: SECRETS.alice, ...env }
    })
    const p = new Proc(child, `herald tail ${args.join(' ')}`)
    h.onClose(() => p.kill())
    return p
  }

  /** One event of each payload kind, from two services; returns them as a client receives them. */
  async function seed (url: string): Promise<HeraldEvent[]> {
    const a = await h.service(url, 'svc-a')
    const b = await h.service(url, 'svc-b')
    await a.raise('readings', { i: 1 })
    await a.raise('readings', Buffer.from([1, 2, 3]))
    await b.raise('readings', 'text')
    await b.raise('temperature', { c: 21.5 })
    await a.raise('temperature', { c: 19 })
    await a.raiseNull('temperature')
    await Promise.all([a.drained(), b.drained()])
    const check = h.client(url, 'alice', 'check')
    const readings = await collect(check, 'readings')
    const temperature = await collect(check, 'temperature')
    return [...await readings.until(3), ...await temperature.until(2)]
  }

  it('prints one line per event: time, service, event, position, age and payload of each kind', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const expected = await seed(broker.url)
    const p = tail(['readings', 'temperature', '--url', broker.url, '--user', 'alice', '--count', '5', '--no-summary'])
    expect(await finished(p)).toBe(0)
    expect(p.lines).toHaveLength(5)
    const shown = p.lines.map(parseLine)
    const payloadText = (e: HeraldEvent): string => e.isNull ? '[null]' : e.payload instanceof Uint8Array ? `bytes(${e.payload.byteLength}) ${Buffer.from(e.payload).toString('hex')}` : JSON.stringify(e.payload)
    expect(shown.map((s) => `${s.service} ${s.event} #${s.position} ${s.rest}`).sort())
      .toEqual(expected.map((e) => `${e.serviceId} ${e.name} #${e.position} ${payloadText(e)}`).sort())
    expect(shown.map((s) => s.rest).sort()).toEqual(['"text"', '[null]', 'bytes(3) 010203', '{"c":21.5}', '{"i":1}'])
    // each event's lines in position order
    for (const name of ['readings', 'temperature']) {
      const positions = shown.filter((s) => s.event === name).map((s) => s.position)
      expect(positions).toEqual([...positions].sort((x, y) => x - y))
    }
    expect(p.stderr).toMatch(/herald tail: watching readings, temperature at mqtt:\/\/\S+ as alice\/tail-\S+-\d+ \(start all, positions in memory\)/)
  })

  it('--json prints one object per line with all the metadata', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const expected = await seed(broker.url)
    const p = tail(['readings', 'temperature', '--url', broker.url, '--user', 'alice', '--count', '5', '--json', '--no-summary'])
    expect(await finished(p)).toBe(0)
    const records = p.lines.map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(records).toHaveLength(5)
    for (const e of expected) {
      const r = records.find((x) => x.id === e.id)
      expect(r, `record of ${e.id}`).toBeDefined()
      expect(r).toEqual({
        id: e.id,
        serviceId: e.serviceId,
        event: e.name,
        category: e.category,
        position: e.position,
        raisedAt: e.raisedAt,
        receivedAt: e.receivedAt,
        arrivedAt: expect.any(Number) as unknown,
        age: expect.any(Number) as unknown,
        redelivered: false,
        isNull: e.isNull,
        recipient: null,
        payloadKind: e.isNull ? 'none' : e.payload instanceof Uint8Array ? 'bytes' : 'json',
        payload: e.payload instanceof Uint8Array ? Buffer.from(e.payload).toString('base64') : e.payload
      })
      expect(r?.age).toBeGreaterThanOrEqual(0)
    }
  })

  it('--count N exits 0 after N events, the first N', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 10; i++) await svc.raise('readings', { i })
    await svc.drained()
    const p = tail(['readings', '--url', broker.url, '--user', 'alice', '--count', '3', '--no-summary'])
    expect(await finished(p)).toBe(0)
    expect(p.lines.map((l) => parseLine(l).rest)).toEqual(['{"i":0}', '{"i":1}', '{"i":2}'])
  })

  it('--start new skips the events stored before it subscribed', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 3; i++) await svc.raise('readings', { old: i })
    await svc.drained()
    const p = tail(['readings', '--url', broker.url, '--user', 'alice', '--start', 'new', '--count', '2', '--no-summary'])
    await waitFor(() => p.stderr.includes('herald tail: watching readings'), 'tail to subscribe')
    await svc.raise('readings', { new: 0 })
    await svc.raise('readings', { new: 1 })
    expect(await finished(p)).toBe(0)
    expect(p.lines.map((l) => parseLine(l).rest)).toEqual(['{"new":0}', '{"new":1}'])
  })

  it('a restart with --positions resumes where it stopped, without repeating (whatever its client name)', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    for (let i = 0; i < 5; i++) await svc.raise('readings', { i })
    await svc.drained()
    const file = join(h.dir, 'tail-positions.db')
    const run = async (count: number): Promise<string[]> => {
      const p = tail(['readings', '--url', broker.url, '--user', 'alice', '--positions', file, '--count', String(count), '--no-summary'])
      expect(await finished(p)).toBe(0)
      expect(p.stderr).toContain(`positions in ${file}`)
      return p.lines.map((l) => parseLine(l).rest)
    }
    expect(await run(3)).toEqual(['{"i":0}', '{"i":1}', '{"i":2}'])
    expect(await run(2)).toEqual(['{"i":3}', '{"i":4}'])
    await svc.raise('readings', { i: 5 })
    expect(await run(1)).toEqual(['{"i":5}'])
  })

  it('a wrong password exits 2 with a message naming the user, and prints no event', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    await seed(broker.url)
    const p = tail(['readings', '--url', broker.url, '--user', 'alice', '--no-summary'], { HERALD_PASSWORD: 'not-her-password' })
    expect(await finished(p)).toBe(2)
    expect(p.lines).toEqual([])
    expect(p.stderr).toContain(`herald: the broker at ${broker.url} refused the credentials of user "alice": unknown user or wrong password [BAD_CREDENTIALS]`)
  })

  it('an unknown event, or one the user may not receive, exits 2 naming it, and prints no event', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    await seed(broker.url)
    const unknown = tail(['readings', 'no-such-event', '--url', broker.url, '--user', 'alice', '--no-summary'])
    const refused = tail(['readings', 'alarms', '--url', broker.url, '--user', 'bob', '--no-summary'], { HERALD_PASSWORD: SECRETS.bob })
    expect(await finished(unknown)).toBe(2)
    expect(unknown.lines).toEqual([])
    expect(unknown.stderr).toContain('herald: cannot tail "no-such-event" as user "alice": event "no-such-event" is not defined in the site [UNKNOWN_EVENT]')
    expect(await finished(refused)).toBe(2)
    expect(refused.lines).toEqual([])
    expect(refused.stderr).toContain('herald: cannot tail "alarms" as user "bob": user "bob" may not receive "alarms" [NOT_AUTHORIZED]')
  })

  it('keeps retrying an unreachable broker with the state in the summary, then shows its events; SIGTERM exits 0', async () => {
    h = await Harness.create()
    const port = await freePort()
    const url = `mqtt://127.0.0.1:${port}`
    const p = tail(['readings', '--url', url, '--user', 'alice', '--summary-every', '200ms'])
    await waitFor(() => /offline \S+ \(CONNECTION_LOST: [^)]*ECONNREFUSED[^)]*\) · 0 events · 0\.0\/s · readings 0\n/.test(p.stderr), 'an offline summary line')
    const broker = await h.broker({ port })
    await waitFor(() => p.stderr.includes('herald tail: watching readings'), 'tail to subscribe once the broker is up')
    const svc: ServiceEndpoint = await h.service(broker.url, 'svc-a')
    await svc.raise('readings', { late: true })
    await p.waitLine((l) => l.endsWith('{"late":true}'), 20_000)
    await waitFor(() => /\nonline · 1 event · \d+\.\d\/s · readings 1\n/.test(p.stderr), 'an online summary line')
    p.child.kill('SIGTERM')
    expect(await finished(p)).toBe(0)
    expect(p.lines.map((l) => parseLine(l))).toMatchObject([{ service: 'svc-a', event: 'readings', rest: '{"late":true}' }])
    // the last summary, printed on the way out
    expect(p.stderr).toMatch(/closed · 1 event · \d+\.\d\/s · readings 1\n$/)
  })

  it('with --no-summary, shows a connection error once (not once per retry), naming the URL and the reason', async () => {
    h = await Harness.create()
    const pki = join(h.dir, 'pki')
    await mkdir(pki)
    const [ca, otherCa] = [await makeTestCa(pki, 'ca'), await makeTestCa(pki, 'other-ca')]
    const server = await ca.issueServer('server')
    const broker = await h.broker({ tls: { certFile: server.certFile, keyFile: server.keyFile } })
    const url = `mqtts://localhost:${broker.listener.address.port}`
    // trusts another CA: every attempt is refused by the client's TLS
    const p = tail(['readings', '--url', url, '--ca', otherCa.certFile, '--user', 'alice', '--no-summary'])
    // and a port nothing listens on: every attempt is refused by the OS
    const closed = `mqtt://127.0.0.1:${await freePort()}`
    const q = tail(['readings', '--url', closed, '--user', 'alice', '--no-summary'])
    const untrusted = (): number => p.stderr.split(`cannot connect to ${url}: TLS: the broker's certificate was refused`).length - 1
    const refused = (): number => q.stderr.split(`cannot connect to ${closed}: `).length - 1
    await waitFor(() => untrusted() >= 1 && refused() >= 1, 'both tails to show why they cannot connect')
    expect(p.stderr).toMatch(/^herald tail: warn: cannot connect to mqtts:\/\/localhost:\d+: TLS: the broker's certificate was refused: .*check the CA.*; retrying/m)
    expect(q.stderr).toMatch(/^herald tail: warn: cannot connect to mqtt:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED.*; retrying/m)
    // several more retries, still one line each
    const failures = broker.tlsListener?.handshakeFailures ?? 0
    await waitFor(() => (broker.tlsListener?.handshakeFailures ?? 0) >= failures + 3, 'three more refused handshakes')
    expect(untrusted()).toBe(1)
    expect(refused()).toBe(1)
    expect(p.lines).toEqual([])
    expect(p.child.exitCode).toBeNull()
  })
})

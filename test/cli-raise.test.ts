/**
 * `herald raise` ([CMD-USAGE-1], README "Command line"): a real broker process, the real binary.
 * Exit 0 only once the broker has stored the event (a client then gets it); a refused event, refused
 * credentials or no broker exit 1 saying why; with --persistence the unsent event is kept and sent by
 * the next run.
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ClientEndpoint, type HeraldEvent } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { tempDir } from '@herald/node-runtime/testing'
import { freePort } from './support/ports.js'
import { startBrokerProcess, writeTestSite, type Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

function raise (args: readonly string[], secret: string = SECRETS['svc-a']): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'raise', ...args], { env: { ...process.env, HERALD_SECRET: secret }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.once('close', (code) => { resolve({ code, stdout, stderr }) })
  })
}

let dir: { path: string, remove: () => Promise<void> }
let site: string
let broker: { proc: Proc, url: string, port: number }

beforeAll(async () => {
  dir = await tempDir('herald-raise-')
  site = await writeTestSite(dir.path)
  broker = await startBrokerProcess(site, join(dir.path, 'data'), 0)
})

afterAll(async () => {
  await broker.proc.kill()
  await dir.remove()
})

describe('herald raise', () => {
  it('exits 0 once the broker has stored the event, and a client then receives it', async () => {
    const r = await raise(['readings', '{"t":21.5}', '--service', 'svc-a', '--url', broker.url, '--lifetime', '1d'])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^raised readings #1 \(.+\): stored by the broker\n$/)
    const got: HeraldEvent[] = []
    const client = new ClientEndpoint({ url: broker.url, clientName: 'raise-check', user: 'alice', password: SECRETS.alice }).start()
    try {
      await client.subscribe('readings', {}, (e) => { got.push(e) })
      await waitFor(() => got.length === 1, 'the raised event at the client')
      expect(got[0]).toMatchObject({ name: 'readings', serviceId: 'svc-a', payload: { t: 21.5 } })
    } finally {
      await client.close()
    }
  })

  it('a null instance of a replacing event, and a private event to one client', async () => {
    expect((await raise(['temperature', '--null', '--category', 'replacing', '--service', 'svc-a', '--url', broker.url])).code).toBe(0)
    expect((await raise(['notices', '"hello"', '--category', 'private', '--to', 'alice/console', '--service', 'svc-a', '--url', broker.url])).code).toBe(0)
  })

  it('an event the broker refuses for this service exits 1 naming the refusal, never "stored"', async () => {
    // svc-b may not raise alarms (the site), whatever the command line says
    const r = await raise(['alarms', '{"code":1}', '--service', 'svc-b', '--url', broker.url], SECRETS['svc-b'])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/^herald raise: the broker refused alarms #1: .+ \[[A-Z_]+\]\n$/)
  })

  it('refused credentials or no broker: exit 1 within --timeout, saying why and whether the event is kept', async () => {
    const bad = await raise(['readings', '1', '--service', 'svc-a', '--url', broker.url, '--timeout', '3s'], 'not-the-secret')
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('was not stored by the broker within 3000 ms')
    expect(bad.stderr).toContain('BAD_CREDENTIALS')
    expect(bad.stderr).toContain('not kept')
    const nobody = await freePort()
    const file = join(dir.path, 'raise.db')
    const kept = await raise(['readings', '{"kept":true}', '--service', 'svc-a', '--url', `mqtt://127.0.0.1:${nobody}`, '--timeout', '1s', '--persistence', file])
    expect(kept.code).toBe(1)
    expect(kept.stderr).toContain(`kept in ${file}`)
    // the next run on the file sends the kept event first, then its own
    const next = await raise(['readings', '{"kept":false}', '--service', 'svc-a', '--url', broker.url, '--persistence', file])
    expect(next.code).toBe(0)
    const got: HeraldEvent[] = []
    const client = new ClientEndpoint({ url: broker.url, clientName: 'raise-kept', user: 'alice', password: SECRETS.alice }).start()
    try {
      await client.subscribe('readings', { start: 'all' }, (e) => { got.push(e) })
      await waitFor(() => got.some((e) => (e.payload as { kept?: boolean } | null)?.kept === false), 'the second run\'s event')
      const payloads = got.map((e) => e.payload).filter((p) => typeof p === 'object' && p !== null && 'kept' in p)
      expect(payloads).toEqual([{ kept: true }, { kept: false }])
    } finally {
      await client.close()
    }
  })

  it('usage errors exit 2: no secret, no payload, --to without a private category', async () => {
    expect((await raise(['readings', '1', '--service', 'svc-a'], '')).code).toBe(2)
    expect((await raise(['readings', '--service', 'svc-a', '--url', broker.url])).code).toBe(2)
    expect((await raise(['readings', '1', '--to', 'alice/x', '--service', 'svc-a', '--url', broker.url])).code).toBe(2)
    expect((await raise(['readings', '{not json', '--service', 'svc-a'])).code).toBe(2)
  })
})

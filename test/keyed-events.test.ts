/**
 * Keyed replacing events end to end ([SITE-KEY-*], [STORE-KEY-*], [SVC-KEY-*], [CLI-KEY-*],
 * [GW-KEY-1]): two thermostats raised through one service keep a last value each, in a broker
 * process on SQLite, across its SIGKILL and restart, and through a gateway with two devices.
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { parseGatewayConfig, startGateway } from '@herald/gateway'
import { ErrorCode, HeraldError, eventsOfService } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { collect, type Collected } from './support/collect.js'
import { Harness } from './support/harness.js'
import { Proc, startBrokerProcess, writeTestSite } from './support/processes.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')
import { ScriptedDevice } from './support/scripted-device.js'
import { gatewayYaml } from './support/gateway-yaml.js'
import { SECRETS, testSite } from './support/site.js'

/** What a collection holds: `<service>:<key>=<c or null>`, in delivery order. */
function seen (c: Collected): string[] {
  return c.events.map((e) => `${e.serviceId}:${e.key ?? '-'}=${e.isNull ? 'null' : String((e.payload as { c: number }).c)}`)
}

describe('keyed replacing events', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('two thermostats through one service: each keeps its last value, a null clears one key, a key filter, maxKeys refusals, a broker restart', async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const data = join(h.dir, 'broker')
    let broker = await startBrokerProcess(site, data, 0)
    h.onClose(() => broker.proc.kill())
    const service = new ServiceEndpoint({ url: broker.url, serviceId: 'svc-a', secret: SECRETS['svc-a'], events: eventsOfService(await testSite(), 'svc-a'), reconnectInitialMs: 20, reconnectMaxMs: 200 })
    h.onClose(() => service.close())
    service.start()
    const rejected: Array<[number, string]> = []
    service.on('rejected', (r) => { rejected.push([r.seq, r.error.code]) })

    // [SVC-KEY-1] the key is the payload's field "device": no key argument
    await service.raise('thermostat', { device: 't1', c: 20 })
    await service.raise('thermostat', { device: 't2', c: 21 })
    await service.raise('thermostat', { device: 't1', c: 22 })
    await service.drained()
    const latest = async (name: string, keys?: string[]): Promise<Collected> =>
      await collect(h.client(broker.url, 'alice', name), 'thermostat', { start: 'latest', ...(keys !== undefined ? { keys } : {}) })
    // [STORE-KEY-1] [CLI-START-4] the latest instance per service and per key
    const first = await latest('first')
    await first.until(2)
    expect(seen(first)).toEqual(['svc-a:t2=21', 'svc-a:t1=22'])

    // [CLI-KEY-1] a key filter: only t2, now and later
    const onlyT2 = await collect(h.client(broker.url, 'alice', 'only-t2'), 'thermostat', { start: 'all', keys: ['t2'] })
    await onlyT2.until(1)

    // [STORE-KEY-3] a third key fits (maxKeys 3), a fourth is refused with KEY_LIMIT; nothing accepted is lost
    await service.raise('thermostat', { device: 't3', c: 23 })
    const refused = await service.raise('thermostat', { device: 't4', c: 24 })
    await service.drained()
    await waitFor(() => rejected.length === 1, 'the KEY_LIMIT rejection')
    expect(rejected).toEqual([[refused.seq, ErrorCode.KEY_LIMIT]])
    const atLimit = await latest('at-limit')
    await atLimit.until(3)
    expect(seen(atLimit)).toEqual(['svc-a:t2=21', 'svc-a:t1=22', 'svc-a:t3=23'])

    // [STORE-KEY-2] a null clears one key only; [SVC-KEY-1] a null names its key
    await service.raiseNull('thermostat', { key: 't1' })
    await service.raise('thermostat', { device: 't2', c: 25 })
    await service.drained()
    await first.until(5)
    expect(seen(first)).toEqual(['svc-a:t2=21', 'svc-a:t1=22', 'svc-a:t3=23', 'svc-a:t1=null', 'svc-a:t2=25'])
    await onlyT2.until(2)
    expect(seen(onlyT2)).toEqual(['svc-a:t2=21', 'svc-a:t2=25'])

    // the broker dies and comes back on the same SQLite file: the last value of every key is there
    await broker.proc.kill()
    broker = await startBrokerProcess(site, data, broker.port)
    const after = await latest('after-restart')
    await after.until(3)
    expect(seen(after)).toEqual(['svc-a:t3=23', 'svc-a:t1=null', 'svc-a:t2=25'])
    const filtered = await latest('after-restart-t1', ['t1'])
    await filtered.until(1)
    expect(seen(filtered)).toEqual(['svc-a:t1=null'])
    expect(rejected).toHaveLength(1)
  })

  it('[SVC-KEY-1] an event keyed by the raise needs its key; a field-keyed payload without its field and a key on an unkeyed event are refused at raise', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    const valves = await collect(h.client(broker.url, 'alice', 'valves'), 'valve', { start: 'all' })
    await svc.raise('valve', { open: true }, { key: 'v1' })
    await svc.raise('valve', { open: false }, { key: 'v2' })
    await valves.until(2)
    expect(valves.events.map((e) => [e.key, e.payload])).toEqual([['v1', { open: true }], ['v2', { open: false }]])
    const refusals = [
      svc.raise('valve', { open: true }).catch((e: unknown) => e),
      svc.raise('thermostat', { c: 20 }).catch((e: unknown) => e),
      svc.raise('thermostat', { device: 't1', c: 20 }, { key: 't2' }).catch((e: unknown) => e),
      svc.raise('temperature', { c: 20 }, { key: 'x' }).catch((e: unknown) => e),
      svc.raiseNull('thermostat').catch((e: unknown) => e),
      svc.raise('valve', { open: true }, { key: 'a\u0000b' }).catch((e: unknown) => e)
    ]
    const errors = await Promise.all(refusals)
    for (const err of errors) {
      expect(err).toBeInstanceOf(HeraldError)
      expect((err as HeraldError).code).toBe(ErrorCode.INVALID_ARGUMENT)
    }
    expect((errors[0] as Error).message).toMatch(/"valve" is keyed by the raise/)
    expect((errors[1] as Error).message).toMatch(/"thermostat" is keyed by field "device"/)
    expect((errors[3] as Error).message).toMatch(/"temperature" is not a keyed event/)
    // [CLI-KEY-1] a key filter on an unkeyed event is refused by the broker, typed
    const client = h.client(broker.url, 'alice', 'wrong')
    const err = await client.subscribe('temperature', { keys: ['x'] }, () => {}).catch((e: unknown) => e)
    expect((err as HeraldError).code).toBe(ErrorCode.INVALID_ARGUMENT)
    expect((err as Error).message).toMatch(/"temperature" is not keyed/)
    const tooMany = await client.subscribe('thermostat', { keys: Array.from({ length: 1001 }, (_, i) => `k${i}`) }, () => {}).catch((e: unknown) => e)
    expect((tooMany as HeraldError).code).toBe(ErrorCode.INVALID_ARGUMENT)
    // the bound itself: 1,000 keys of 128 characters (a REQUEST of about 130 KiB) are taken by the broker
    const longKeys = Array.from({ length: 999 }, (_, i) => `${i}`.padEnd(128, 'x'))
    const many = await collect(h.client(broker.url, 'alice', 'many-keys'), 'thermostat', { start: 'all', keys: [...longKeys, 't9'] })
    await svc.raise('thermostat', { device: 't8', c: 8 })
    await svc.raise('thermostat', { device: 't9', c: 9 })
    await svc.raise('thermostat', { device: longKeys[5]!, c: 5 })
    await many.until(2)
    expect(seen(many)).toEqual(['svc-a:t9=9', `svc-a:${longKeys[5]!}=5`])
  })

  it('[CLI-KEY-3] herald raise --event-key and herald tail --event-key, which shows each key', async () => {
    h = await Harness.create()
    const { proc, url } = await startBrokerProcess(await writeTestSite(h.dir), join(h.dir, 'broker'), 0)
    h.onClose(() => proc.kill())
    const herald = (args: string[], env: Record<string, string>): Proc => {
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } })
      const p = new Proc(child, `herald ${args.join(' ')}`)
      h.onClose(() => p.kill())
      return p
    }
    const raise = async (key: string, payload: string): Promise<void> => {
      const p = herald(['raise', 'valve', payload, '--url', url, '--service', 'svc-a', '--category', 'replacing', '--event-key', key], { HERALD_SECRET: SECRETS['svc-a'] })
      expect(await p.exited, p.stderr).toBe(0)
    }
    await raise('v1', '{"open":true}')
    await raise('v2', '{"open":false}')
    await raise('v1', '{"open":false}')
    const json = herald(['tail', 'valve', '--url', url, '--user', 'alice', '--json', '--no-summary', '--event-key', 'v1', '--event-key', 'v9', '--count', '1'], { HERALD_PASSWORD: SECRETS.alice })
    expect(await json.exited, json.stderr).toBe(0)
    await json.drained
    expect(json.lines.map((l) => JSON.parse(l) as { key: string, payload: unknown }).map((r) => [r.key, r.payload])).toEqual([['v1', { open: false }]])
    const human = herald(['tail', 'valve', '--url', url, '--user', 'alice', '--no-summary', '--count', '2'], { HERALD_PASSWORD: SECRETS.alice })
    expect(await human.exited, human.stderr).toBe(0)
    await human.drained
    const shown = human.lines.filter((l) => l.includes(' valve '))
    expect(shown.map((l) => /\[key "(v\d)"\] (.*)$/.exec(l)?.slice(1))).toEqual([['v2', '{"open":false}'], ['v1', '{"open":false}']])
  })

  it('[GW-KEY-1] a gateway with two devices mapped to one keyed event keeps the last value of both', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const devices = [await ScriptedDevice.listen(), await ScriptedDevice.listen()]
    for (const d of devices) h.onClose(() => d.close())
    const yaml = gatewayYaml(broker.url, join(h.dir, 'gw'), devices.map((d) => d.url), '  - { name: thermostat, category: replacing, key: { field: device } }', `lines:
  reopenInitial: 20ms
  reopenMax: 200ms
  staleAfter: 10s
mapping:
  - on: STATE
    raise: thermostat
    payload: { device: $serial, c: temp:number }
  - on: ALARM
    code: OFF
    raiseNull: thermostat
    key: $serial
`)
    const g = await startGateway(await parseGatewayConfig(join(h.dir, 'gateway.yaml'), yaml))
    h.onClose(() => g.close())
    for (const d of devices) await d.connected()
    devices[0]!.hello('TH-1', 1, { boot: 1, seq: 1 })
    devices[1]!.hello('TH-2', 1, { boot: 1, seq: 1 })
    devices[0]!.send(devices[0]!.state(1, 1, { temp: '20' }), devices[0]!.state(1, 2, { temp: '21' }))
    devices[1]!.send(devices[1]!.state(1, 1, { temp: '30' }))
    await devices[0]!.acked(1, 2)
    await devices[1]!.acked(1, 1)
    await g.endpoint.drained()
    const latest = await collect(h.client(broker.url, 'alice', 'latest'), 'thermostat', { start: 'latest' })
    await latest.until(2)
    expect(seen(latest).sort()).toEqual(['svc-a:TH-1=21', 'svc-a:TH-2=30'])
  })

  it("[CLI-CONC-2] concurrent handlers sequenced by the replacing key: handlers of one key never overlap and run in raise order, different keys run at once, each key's last value arrives", async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    const client = h.client(broker.url, 'alice', 'valves-concurrent')
    const keys = ['v0', 'v1', 'v2', 'v3']
    const running = new Map<string, number>()
    const order = new Map<string, number[]>(keys.map((k) => [k, []]))
    let overlapsOfAKey = 0
    let most = 0
    const sub = await client.subscribe('valve', { start: 'all', concurrency: 4, sequence: 'key' }, async (e) => {
      const key = e.key as string
      if ((running.get(key) ?? 0) > 0) overlapsOfAKey++
      running.set(key, (running.get(key) ?? 0) + 1)
      const now = [...running.values()].reduce((a, b) => a + b, 0)
      if (now > most) most = now
      order.get(key)?.push((e.payload as { n: number }).n)
      await new Promise((resolve) => setTimeout(resolve, 5))
      running.set(key, (running.get(key) ?? 1) - 1)
    })
    const rounds = 50
    const raised: Array<Promise<unknown>> = []
    for (let n = 0; n < rounds; n++) for (const k of keys) raised.push(svc.raise('valve', { n }, { key: k }))
    await Promise.all(raised)
    await waitFor(() => keys.every((k) => order.get(k)?.at(-1) === rounds - 1), "each key's last value handled", 30_000)
    expect(overlapsOfAKey).toBe(0)
    for (const k of keys) {
      const ns = order.get(k) as number[]
      // replacing: instances may be superseded before they are sent, never delivered out of order
      expect(ns.every((n, i) => i === 0 || n > (ns[i - 1] as number))).toBe(true)
    }
    expect(most).toBeGreaterThan(1)
    expect(sub.redelivered).toBe(0)
  })
})

/**
 * Plain-MQTT ingest end to end [PLAIN-INGEST-1..6]: `mosquitto_pub` and mqtt.js against a real
 * `herald broker` process, a real client endpoint receiving what was raised; a broker SIGKILLed
 * during a burst of QoS 1 publishes keeps every event it acknowledged.
 */
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import mqtt, { type MqttClient } from 'mqtt'
import type { HeraldEvent } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { startBrokerProcess, writeTestSite, type Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'

/** Runs mosquitto_pub as a device with svc-a's credentials; resolves with its exit code. */
function mosquittoPub (port: number, args: readonly string[], login: readonly string[] = ['-u', 'svc-a', '-P', SECRETS['svc-a']]): Promise<{ code: number, stderr: string }> {
  return new Promise((resolve) => {
    execFile('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', 'boiler-dev', ...login, '-q', '1', ...args], { timeout: 30_000 }, (err, _stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stderr })
    })
  })
}

/** An mqtt.js connection with svc-a's credentials, no reconnects. */
async function device (url: string, clientId: string): Promise<MqttClient> {
  const c = mqtt.connect(url, { clientId, username: 'svc-a', password: SECRETS['svc-a'], protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 30_000 })
  c.on('error', () => { /* shows as close */ })
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => { resolve() })
    c.once('close', () => { reject(new Error(`${clientId}: closed before CONNACK`)) })
  })
  return c
}

function publish (c: MqttClient, topic: string, payload: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    c.publish(topic, payload, { qos: 1 }, (err) => { if (err !== undefined && err !== null) reject(err); else resolve() })
  })
}

async function metric (base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? 0 : Number(line.slice(name.length + 1))
}

const texts = (events: readonly HeraldEvent[]): unknown[] => events.map((e) => e.payload instanceof Uint8Array ? Array.from(e.payload) : e.payload)

describe('plain MQTT ingest end to end', () => {
  let h: Harness
  const procs: Proc[] = []
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill()
    await h.close()
  })

  it('mosquitto_pub raises JSON, bytes, private and null events, exactly once to a client; a keyed retry is stored once, across a broker restart', async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const data = join(h.dir, 'broker')
    let broker = await startBrokerProcess(site, data, 0, ['--metrics-port', '0'])
    procs.push(broker.proc)
    const port = broker.port
    const alice = h.client(broker.url, 'alice', 'app')
    const readings = await collect(alice, 'readings')
    const notices = await collect(alice, 'notices')
    const temperature = await collect(alice, 'temperature')

    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings', '-m', '{"n":1}'])).code).toBe(0)
    const bytes = join(h.dir, 'bytes.bin')
    await writeFile(bytes, Buffer.from([0, 1, 2, 255]))
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings', '-f', bytes])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/notices/alice/app', '-m', '"for alice/app"'])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/notices/bob/app', '-m', '"for bob"'])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/temperature', '-m', '21.5'])).code).toBe(0)
    await temperature.until(1)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/temperature', '-n'])).code).toBe(0)
    // the same keyed publish, retried
    for (let i = 0; i < 2; i++) expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings/k/order-17', '-m', '{"order":17}'])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings', '-m', '"marker"'])).code).toBe(0)
    await readings.until(4)
    await temperature.until(2)
    await notices.until(1)
    expect(texts(readings.events)).toEqual([{ n: 1 }, [0, 1, 2, 255], { order: 17 }, 'marker'])
    expect(readings.events.map((e) => [e.serviceId, e.instance])).toEqual(Array(4).fill(['svc-a', 'mqtt']))
    expect(new Set(readings.events.map((e) => e.id)).size).toBe(4)
    expect(readings.events.every((e) => /^mqtt-\d+$/.test(e.id))).toBe(true)
    expect(notices.events.map((e) => [e.payload, e.recipient])).toEqual([['for alice/app', 'alice/app']])
    expect(temperature.events.map((e) => [e.payload, e.isNull])).toEqual([[21.5, false], [null, true]])

    // bad input: the publisher's connection is closed (mosquitto_pub fails), counted in /metrics
    const metricsLine = await broker.proc.waitLine((l) => / metrics on http:\/\//.test(l))
    const base = metricsLine.slice(metricsLine.indexOf('http://')).replace(/\/metrics$/, '')
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/nope', '-m', '1'])).code).not.toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings/alice/app', '-m', '1'])).code).not.toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings', '-m', '1'], ['-u', 'alice', '-P', SECRETS.alice])).code).not.toBe(0)
    expect(await metric(base, 'herald_ingest_refused_total{reason="unknownEvent"}')).toBe(1)
    expect(await metric(base, 'herald_ingest_refused_total{reason="wrongCategory"}')).toBe(1)
    expect(await metric(base, 'herald_ingest_refused_total{reason="notService"}')).toBe(1)
    expect(await metric(base, 'herald_ingest_publishes_total{outcome="duplicate"}')).toBe(1)

    // SIGKILL and restart: the key is still known; the client goes on from its position
    await broker.proc.kill()
    procs.splice(0)
    broker = await startBrokerProcess(site, data, port)
    procs.push(broker.proc)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings/k/order-17', '-m', '{"order":17}'])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/readings', '-m', '"after restart"'])).code).toBe(0)
    await readings.until(5, 'the event raised after the restart')
    expect(texts(readings.events)).toEqual([{ n: 1 }, [0, 1, 2, 255], { order: 17 }, 'marker', 'after restart'])
    // seqs go on after the restart: ids are never reused
    expect(new Set(readings.events.map((e) => e.id)).size).toBe(5)
    expect(readings.events[4]!.sequence).toBeGreaterThan(readings.events[3]!.sequence)
  })

  it('[PLAIN-INGEST-7] keyed events: the key from the payload field or the r/<key> level; a keyless or over-maxKeys publish closes the connection, nothing stored lost', async () => {
    h = await Harness.create()
    const broker = await startBrokerProcess(await writeTestSite(h.dir), join(h.dir, 'broker'), 0)
    procs.push(broker.proc)
    const port = broker.port
    for (const [device, c] of [['t1', 20], ['t2', 21], ['t1', 22]] as const) {
      expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/thermostat', '-m', JSON.stringify({ device, c })])).code).toBe(0)
    }
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/thermostat/r/t2', '-n'])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/valve/r/v1/k/retry-1', '-m', '{"open":true}'])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/valve/r/v1/k/retry-1', '-m', '{"open":true}'])).code).toBe(0)
    // refused, each closing its connection: a field-keyed payload without its field, a raise-keyed publish without r/<key>
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/thermostat', '-m', '{"c":1}'])).code).not.toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/valve', '-m', '{"open":true}'])).code).not.toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/thermostat', '-m', '{"device":"t3","c":23}'])).code).toBe(0)
    // t2 holds a null: the fourth key takes its place; a fifth is refused
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/thermostat', '-m', '{"device":"t4","c":24}'])).code).toBe(0)
    expect((await mosquittoPub(port, ['-t', 'herald/v1/raise/thermostat', '-m', '{"device":"t5","c":25}'])).code).not.toBe(0)
    const latest = await collect(h.client(broker.url, 'alice', 'latest'), 'thermostat', { start: 'latest' })
    await latest.until(3)
    expect(latest.events.map((e) => [e.key, e.payload])).toEqual([['t1', { device: 't1', c: 22 }], ['t3', { device: 't3', c: 23 }], ['t4', { device: 't4', c: 24 }]])
    const valves = await collect(h.client(broker.url, 'alice', 'valves'), 'valve', { start: 'all' })
    await valves.until(1)
    expect(valves.events.map((e) => [e.key, e.payload])).toEqual([['v1', { open: true }]])
  })

  it('mqtt.js: a bad publish closes only its own connection; a good connection publishing meanwhile goes on', async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const broker = await startBrokerProcess(site, join(h.dir, 'broker'), 0)
    procs.push(broker.proc)
    const readings = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    const good = await device(broker.url, 'good-dev')
    let n = 0
    await publish(good, 'herald/v1/raise/readings', JSON.stringify({ n: n++ }))
    for (const [topic, payload] of [['herald/v1/raise/undeclared', '1'], ['herald/v1/raise/notices', '1'], ['herald/v1/raise/alarms', 'x'.repeat(2000)]] as const) {
      const bad = await device(broker.url, 'bad-dev')
      const closed = new Promise<void>((resolve) => { bad.once('close', () => { resolve() }) })
      bad.publish(topic, payload, { qos: 1 })
      await closed
      bad.end(true)
      await publish(good, 'herald/v1/raise/readings', JSON.stringify({ n: n++ }))
    }
    await readings.until(4)
    expect(texts(readings.events)).toEqual([0, 1, 2, 3].map((n) => ({ n })))
    good.end(true)
  })

  it('a broker SIGKILLed during a burst of QoS 1 publishes from several devices has stored every event it acknowledged', async () => {
    h = await Harness.create()
    const site = await writeTestSite(h.dir)
    const data = join(h.dir, 'broker')
    const first = await startBrokerProcess(site, data, 0)
    procs.push(first.proc)
    const DEVICES = 4
    const PER_DEVICE = 500
    const PAD = 'x'.repeat(1000)
    const KILL_AT = 400
    const devices = await Promise.all(Array.from({ length: DEVICES }, async (_, d) => await device(first.url, `burst-${d}`)))
    const acked = new Set<string>()
    let failed = 0
    // every publish pipelined at once; PUBACKs arrive as commits finish. At the 400th the broker is
    // SIGKILLed at once (from the PUBACK's callback, mid-burst: a PUBACK sent before its commit would
    // be lost right there); PUBACKs it sent before it died still count
    for (let n = 0; n < PER_DEVICE; n++) {
      for (let d = 0; d < DEVICES; d++) {
        // 1 KiB each: a device's burst spans many socket reads, so many commits
        const body = JSON.stringify({ d, n, pad: PAD })
        devices[d]!.publish('herald/v1/raise/readings', body, { qos: 1 }, (err) => {
          if (err !== undefined && err !== null) {
            failed++
            return
          }
          acked.add(body)
          if (acked.size === KILL_AT) first.proc.child.kill('SIGKILL')
        })
      }
    }
    await first.proc.exited
    await first.proc.kill()
    procs.splice(0)
    // every connection closed: no PUBACK can come any more
    await waitFor(() => devices.every((c) => !c.connected), 'the devices to see the broker gone', 60_000)
    const ackedAtKill = new Set(acked)
    for (const c of devices) c.end(true)
    // the burst was cut: not everything was acknowledged
    expect(ackedAtKill.size).toBeLessThan(DEVICES * PER_DEVICE)

    const second = await startBrokerProcess(site, data, first.port)
    procs.push(second.proc)
    const marker = await device(second.url, 'marker-dev')
    await publish(marker, 'herald/v1/raise/readings', '"marker"')
    marker.end(true)
    const readings = await collect(h.client(second.url, 'alice', 'reader'), 'readings')
    await waitFor(() => readings.events.some((e) => e.payload === 'marker'), 'the marker, stored after everything before the kill', 120_000)
    const stored = readings.events.filter((e) => e.payload !== 'marker')
    const bodies = stored.map((e) => JSON.stringify(e.payload))
    // every acknowledged event is there, with its payload; nothing is there twice; ids are unique
    const missing = [...ackedAtKill].filter((b) => !bodies.includes(b))
    expect(missing).toEqual([])
    expect(new Set(bodies).size).toBe(bodies.length)
    expect(new Set(stored.map((e) => e.id)).size).toBe(stored.length)
    expect(stored.every((e) => e.serviceId === 'svc-a' && e.instance === 'mqtt')).toBe(true)
    // each device's events in the order it published them
    for (let d = 0; d < DEVICES; d++) {
      const ns = stored.map((e) => e.payload as { d: number, n: number }).filter((p) => p.d === d).map((p) => p.n)
      expect(ns).toEqual([...ns].sort((a, b) => a - b))
    }
    expect(failed + acked.size).toBeLessThanOrEqual(DEVICES * PER_DEVICE)
  })
})

/**
 * The plain-MQTT view ([PLAIN-VIEW-1..8] in docs/protocol.md, README "With plain MQTT tools"): a real
 * broker process, events raised by a real service endpoint, read by `mosquitto_sub` (Debian
 * mosquitto-clients) and by mqtt.js as ordinary MQTT 3.1.1 clients. Retained last values at once,
 * null clearing, live events at QoS 0 and 1, the access rules and private recipients under
 * wildcards, refused logins, a subscriber that never reads (bounded and closed, others unaffected),
 * and the exactly-once client endpoint unaffected by plain subscribers.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import mqtt, { type IClientSubscribeOptions, type MqttClient } from 'mqtt'
import type { ServiceEndpoint } from '@herald/service-endpoint'
import { RawMqtt } from '@herald/broker/testing'
import { eventsOfService } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { startBrokerProcess, type Proc } from './support/processes.js'
import { SECRETS, TEST_SITE_DOC } from './support/site.js'

/** The test site plus replacing events guarded by a role and by a login. */
const SITE = {
  ...TEST_SITE_DOC,
  events: [
    ...TEST_SITE_DOC.events,
    { name: 'tamper', category: 'replacing', access: { roles: ['operator'] } },
    { name: 'heater', category: 'replacing', access: 'authenticated' }
  ],
  services: TEST_SITE_DOC.services.map((s) => s.id === 'svc-a' ? { ...s, events: [...s.events, 'tamper', 'heater'] } : s)
}

const SLOW_TIMEOUT_MS = 6000
const MAX_INFLIGHT = 50
const MAX_SUBSCRIPTIONS = 6

interface Got { topic: string, qos: number, retain: boolean, env: Record<string, unknown> }

/** A plain mqtt.js subscriber: what it received, in order. */
class PlainSub {
  readonly got: Got[] = []
  constructor (readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.got.push({ topic, qos: packet.qos, retain: packet.retain, env: JSON.parse(payload.toString('utf8')) as Record<string, unknown> })
    })
  }

  topics (): string[] { return this.got.map((g) => g.topic) }
  async subscribe (filters: Record<string, IClientSubscribeOptions['qos']>): Promise<number[]> {
    const granted = await this.client.subscribeAsync(Object.fromEntries(Object.entries(filters).map(([t, qos]) => [t, { qos: qos ?? 0 }])))
    return granted.map((g) => g.qos)
  }
}

let h: Harness
let broker: { proc: Proc, url: string, port: number }
let svc: ServiceEndpoint
const clients: MqttClient[] = []
const children: ChildProcess[] = []

async function plain (user: 'alice' | 'bob' | null, clientId: string): Promise<PlainSub> {
  const c = await mqtt.connectAsync(broker.url, { clientId, protocolVersion: 4, reconnectPeriod: 0, ...(user !== null ? { username: user, password: SECRETS[user] } : {}) })
  clients.push(c)
  return new PlainSub(c)
}

/** mosquitto_sub printing `<retain> <qos> <topic> <payload>` per message. */
function mosquittoSub (args: readonly string[]): { lines: string[], exited: Promise<number | null>, stderr: () => string, child: ChildProcess } {
  const child = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(broker.port), '-V', 'mqttv311', '-F', '%r %q %t %p', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  const lines: string[] = []
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
    const parts = out.split('\n')
    out = parts.pop()!
    lines.push(...parts)
  })
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<number | null>((resolve) => { child.once('exit', (code) => { resolve(code) }) })
  return { lines, exited, stderr: () => err, child }
}

/** Raises and waits until the broker has acknowledged (stored) it. */
async function raise (name: string, payload: unknown): Promise<void> {
  const r = await svc.raise(name, payload as never)
  await svc.whenAcked(r.seq)
}

beforeAll(async () => {
  h = await Harness.create()
  const site = join(h.dir, 'site.json')
  await writeFile(site, JSON.stringify(SITE))
  broker = await startBrokerProcess(site, join(h.dir, 'data'), 0, [
    '--slow-connection-timeout', `${SLOW_TIMEOUT_MS}ms`, '--plain-max-queued-bytes', String(64 * 1024),
    '--plain-max-inflight', String(MAX_INFLIGHT), '--plain-max-subscriptions', String(MAX_SUBSCRIPTIONS)
  ])
  svc = await h.service(broker.url, 'svc-a', { events: eventsOfService(await parseSite(SITE), 'svc-a') })
})

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL')
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})))
  await svc?.close()
  await broker?.proc.kill()
  await h?.close()
})

describe('plain MQTT view', () => {
  it('a new subscriber gets the last value of each replacing event at once, retained, by the access rule; a null instance clears it', async () => {
    await raise('temperature', { c: 1 })
    await raise('temperature', { c: 2 })
    await raise('tamper', 'open')
    await raise('heater', 'on')
    const svcB = await h.service(broker.url, 'svc-b')
    await svcB.whenAcked((await svcB.raise('temperature', { c: 5 })).seq)

    // one SUBSCRIBE: the retained values of '#' come first, then those of the second filter, so its
    // value arriving twice says the '#' burst is complete
    const end = 'herald/v1/events/temperature/svc-b'
    const expectRetained = async (user: 'alice' | 'bob' | null, expected: Record<string, unknown>): Promise<void> => {
      const s = await plain(user, `view-retained-${user ?? 'guest'}`)
      expect(await s.subscribe({ '#': 1, [end]: 0 })).toEqual([1, 0])
      await waitFor(() => s.topics().filter((t) => t === end).length === 2, `${user ?? 'guest'}: the retained values`)
      const burst = s.got.slice(0, s.got.length - 1)
      expect(Object.fromEntries(burst.map((g) => [g.topic, g.env.payload]))).toEqual(expected)
      expect(burst.length).toBe(Object.keys(expected).length)
      for (const g of s.got) expect(g.retain).toBe(true)
      const first = burst.find((g) => g.topic === 'herald/v1/events/temperature/svc-a')!
      expect(first.env).toMatchObject({ service: 'svc-a', event: 'temperature', category: 'replacing', isNull: false, payloadEncoding: 'json', payload: { c: 2 } })
      expect(first.env.id).toMatch(/^.+-2$/)
      expect(typeof first.env.position).toBe('number')
      expect(typeof first.env.raisedAt).toBe('number')
      expect(typeof first.env.receivedAt).toBe('number')
    }
    const temps = { 'herald/v1/events/temperature/svc-a': { c: 2 }, 'herald/v1/events/temperature/svc-b': { c: 5 } }
    await expectRetained('alice', { ...temps, 'herald/v1/events/tamper/svc-a': 'open', 'herald/v1/events/heater/svc-a': 'on' })
    await expectRetained('bob', { ...temps, 'herald/v1/events/heater/svc-a': 'on' })
    await expectRetained(null, temps)

    // mosquitto_sub, as a user would run it: the same retained values, the retain flag set
    const m = mosquittoSub(['-u', 'alice', '-P', SECRETS.alice, '-t', 'herald/v1/events/+/svc-a', '-t', 'herald/v1/events/heater/svc-a'])
    await waitFor(() => m.lines.filter((l) => l.includes(' herald/v1/events/heater/svc-a ')).length === 2, 'mosquitto_sub: the retained values')
    const byTopic = new Map(m.lines.map((l) => { const [r, q, t, ...p] = l.split(' '); return [t!, { r, q, env: JSON.parse(p.join(' ')) as Record<string, unknown> }] }))
    expect([...byTopic.keys()].sort()).toEqual(['herald/v1/events/heater/svc-a', 'herald/v1/events/tamper/svc-a', 'herald/v1/events/temperature/svc-a'])
    expect(byTopic.get('herald/v1/events/temperature/svc-a')).toMatchObject({ r: '1', env: { payload: { c: 2 } } })

    // live: a null instance goes out at once, without the retain flag; a new subscriber then gets
    // the null instance as the retained value, telling "no value" from a value
    const live = m.lines.length
    await svc.whenAcked((await svc.raiseNull('temperature')).seq)
    await waitFor(() => m.lines.length > live, 'mosquitto_sub: the null instance, live')
    const [r, , t, ...p] = m.lines[live]!.split(' ')
    expect([r, t]).toEqual(['0', 'herald/v1/events/temperature/svc-a'])
    expect(JSON.parse(p.join(' '))).toMatchObject({ isNull: true, payloadEncoding: 'none', payload: null })
    const later = await plain(null, 'view-after-null')
    await later.subscribe({ 'herald/v1/events/temperature/svc-a': 0 })
    await waitFor(() => later.got.length === 1, 'the cleared value for a new subscriber')
    expect(later.got[0]).toMatchObject({ retain: true, env: { isNull: true, payload: null, payloadEncoding: 'none' } })
    m.child.kill('SIGKILL')
    await svcB.close()
  })

  it('live events at QoS 0 and 1 as asked; wildcards never leak an event or a private event the user may not read', async () => {
    await raise('temperature', { warm: true })
    const subs = {
      alice: await plain('alice', 'view-live-alice'),
      bob: await plain('bob', 'view-live-bob'),
      guest: await plain(null, 'view-live-guest')
    }
    expect(await subs.alice.subscribe({ 'herald/v1/events/#': 1 })).toEqual([1])
    // QoS 2 is granted as asked; the view sends at QoS 1 at most
    expect(await subs.bob.subscribe({ '#': 2 })).toEqual([2])
    expect(await subs.guest.subscribe({ 'herald/v1/events/+/+': 0, 'herald/v1/events/+/+/+/+': 0, '+/+/+/alarms/#': 1 })).toEqual([0, 0, 1])
    const mAlice = mosquittoSub(['-u', 'alice', '-P', SECRETS.alice, '-t', 'herald/v1/events/notices/#', '-t', 'herald/v1/events/alarms/+', '-t', 'herald/v1/events/temperature/svc-a', '-q', '1'])
    const mBob = mosquittoSub(['-u', 'bob', '-P', SECRETS.bob, '-t', '#'])
    // mosquitto_sub has subscribed once a retained value came
    await waitFor(() => mBob.lines.length >= 1 && mAlice.lines.length >= 1, 'mosquitto_sub subscribed')

    const n = 50
    for (let i = 0; i < n; i++) void svc.raise('readings', { i })
    await raise('alarms', { code: 7 })
    await svc.raisePrivate('notices', 'alice/phone', 'for alice')
    await svc.raisePrivate('notices', 'bob/phone', 'for bob')
    await raise('temperature', { marker: true })
    for (const [who, s] of Object.entries(subs)) await waitFor(() => s.got.some((g) => (g.env.payload as { marker?: boolean } | null)?.marker === true), `${who}: the marker (got ${JSON.stringify(s.topics().slice(-5))})`)
    await waitFor(() => [mAlice, mBob].every((m) => m.lines.some((l) => l.includes('"marker":true'))), 'mosquitto_sub: the marker')

    // what came live (retained values of the subscriptions aside)
    for (const s of Object.values(subs)) s.got.splice(0, s.got.length, ...s.got.filter((g) => !g.retain))
    const names = (s: PlainSub): string[] => s.got.map((g) => `${g.env.event as string}${g.env.recipient !== undefined ? `>${g.env.recipient as string}` : ''}`)
    const readings = Array.from({ length: n }, () => 'readings')
    expect(names(subs.alice)).toEqual([...readings, 'alarms', 'notices>alice/phone', 'temperature'])
    expect(names(subs.bob)).toEqual([...readings, 'notices>bob/phone', 'temperature'])
    expect(names(subs.guest)).toEqual(['temperature'])
    expect(subs.alice.got.map((g) => g.env.payload).slice(0, n)).toEqual(Array.from({ length: n }, (_, i) => ({ i })))
    expect(subs.alice.got.every((g) => g.qos === 1)).toBe(true)
    expect(subs.bob.got.every((g) => g.qos === 1)).toBe(true)
    expect(subs.guest.got[0]).toMatchObject({ qos: 0, topic: 'herald/v1/events/temperature/svc-a' })
    expect(subs.alice.got.find((g) => g.env.event === 'notices')!.topic).toBe('herald/v1/events/notices/svc-a/alice/phone')

    expect(mAlice.lines.filter((l) => l.startsWith('0 ')).map((l) => l.split(' ').slice(1, 3).join(' ')))
      .toEqual(['1 herald/v1/events/alarms/svc-a', '1 herald/v1/events/notices/svc-a/alice/phone', '1 herald/v1/events/temperature/svc-a'])
    const bobLive = mBob.lines.filter((l) => l.startsWith('0 ')).map((l) => l.split(' ')[2])
    expect(bobLive).toEqual([...Array.from({ length: n }, () => 'herald/v1/events/readings/svc-a'), 'herald/v1/events/notices/svc-a/bob/phone', 'herald/v1/events/temperature/svc-a'])
    mAlice.child.kill('SIGKILL')
    mBob.child.kill('SIGKILL')
  })

  it('SUBACK: filters that can match the view are granted, others refused; a service login and too many filters are refused', async () => {
    const subscribe = async (c: RawMqtt, messageId: number, topics: readonly string[]): Promise<number[]> => {
      c.send({ cmd: 'subscribe', messageId, subscriptions: topics.map((topic) => ({ topic, qos: 1 as const })) })
      await waitFor(() => c.packets.some((p) => p.cmd === 'suback' && p.messageId === messageId), 'the SUBACK')
      const ack = c.packets.find((p) => p.cmd === 'suback' && p.messageId === messageId) as { granted: number[] }
      return ack.granted
    }
    const s = new RawMqtt({ port: broker.port, connect: { clientId: 'view-suback', username: 'alice', password: Buffer.from(SECRETS.alice) } })
    expect(await s.connack).toBe(0)
    expect(await subscribe(s, 1, ['#', 'herald/v1/events/not-yet-in-the-site/+', 'herald/v1/raise/#', '$SYS/#', 'herald/s/svc-a/ack', 'herald/v1/events/+']))
      .toEqual([1, 1, 128, 128, 128, 128])
    // two granted, MAX_SUBSCRIPTIONS in all: two more than room
    const granted = await subscribe(s, 2, Array.from({ length: MAX_SUBSCRIPTIONS }, (_, i) => `herald/v1/events/e${i}/+`))
    expect(granted.filter((q) => q === 128).length).toBe(2)
    // the same filters again replace, not add
    expect(await subscribe(s, 3, ['#'])).toEqual([1])
    s.destroy()
    const asService = new RawMqtt({ port: broker.port, connect: { clientId: 'view-as-service', username: 'svc-b', password: Buffer.from(SECRETS['svc-b']) } })
    expect(await asService.connack).toBe(0)
    expect(await subscribe(asService, 1, ['#'])).toEqual([128])
    asService.destroy()
  })

  it('bad credentials are refused (CONNACK 4), with mosquitto_sub and mqtt.js', async () => {
    const m = mosquittoSub(['-u', 'alice', '-P', 'not-her-password', '-t', '#'])
    expect(await m.exited).not.toBe(0)
    expect(m.stderr().toLowerCase()).toMatch(/bad user ?name or password|not authori[sz]ed/)
    await expect(mqtt.connectAsync(broker.url, { clientId: 'view-bad', protocolVersion: 4, reconnectPeriod: 0, username: 'bob', password: 'wrong' }))
      .rejects.toMatchObject({ code: 4 })
  })

  it('a subscriber that never reads is bounded and closed after the slow-connection timeout; others keep getting every event, the client endpoint exactly once', async () => {
    // the exactly-once path beside it
    const exact = h.client(broker.url, 'alice', 'exact')
    const seen: unknown[] = []
    await exact.subscribe('blobs', {}, (e) => { seen.push(e.payload) })
    // a plain subscriber that reads, at QoS 1
    const reader = await plain('bob', 'view-reader')
    await reader.subscribe({ 'herald/v1/events/blobs/+': 1 })
    const n = 30
    const mib = 1024 * 1024
    const flood = async (): Promise<void> => {
      reader.got.length = 0
      seen.length = 0
      let last = 0
      for (let i = 0; i < n; i++) {
        // a buffer of its own each: the endpoint keeps the raised bytes, uncopied, until uploaded
        const blob = new Uint8Array(mib).fill(7)
        blob[0] = i
        last = (await svc.raise('blobs', blob)).seq
      }
      await svc.whenAcked(last)
      await waitFor(() => reader.got.length === n && seen.length === n, `the reading subscribers: ${n} blobs each`, 60_000)
      expect(reader.got.map((g) => Buffer.from(g.env.payload as string, 'base64')[0])).toEqual(Array.from({ length: n }, (_, i) => i))
      expect(reader.got[0]!.env.payloadEncoding).toBe('base64')
      expect(seen.map((p) => (p as Uint8Array)[0])).toEqual(Array.from({ length: n }, (_, i) => i))
    }

    // one that never reads: SUBSCRIBE '#', then its socket is never read again
    const stuck = new RawMqtt({ port: broker.port, connect: { clientId: 'view-stuck', username: 'alice', password: Buffer.from(SECRETS.alice) } })
    expect(await stuck.connack).toBe(0)
    stuck.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] })
    await waitFor(() => stuck.packets.some((p) => p.cmd === 'suback'), 'the SUBACK')
    stuck.socket.pause()
    // a paused socket sees no end: the broker's log line says when it closed the connection
    let closedAt = 0
    const logged = broker.proc.waitLine((l) => l.includes('closing a plain connection that has not read its socket') && l.includes('view-stuck'), 120_000)
      .then((l) => { closedAt = performance.now(); return l })
    const t0 = performance.now()
    // 40 MiB of envelopes to each subscriber
    await flood()
    // closed once it stayed above its bound for the timeout, not before; what the broker held for
    // it then (its unsent bytes, in the log line) is its bound plus about one message, not the flood
    const line = JSON.parse(await logged) as { queuedBytes: number, reason: string }
    expect(closedAt - t0).toBeGreaterThanOrEqual(SLOW_TIMEOUT_MS)
    expect(line.reason).toBe('stuck')
    expect(line.queuedBytes).toBeLessThan(64 * 1024 + 2 * 1.4 * mib)
    // reading again, it gets what the kernel held, then the end
    stuck.socket.resume()
    await stuck.closed
    await exact.close()
  }, 180_000)

  it('a QoS 1 subscriber that reads but never acknowledges gets the in-flight bound of events, and is closed after the slow-connection timeout', async () => {
    const noAck = new RawMqtt({ port: broker.port, connect: { clientId: 'view-noack', username: 'alice', password: Buffer.from(SECRETS.alice) } })
    expect(await noAck.connack).toBe(0)
    noAck.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'herald/v1/events/readings/+', qos: 1 }] })
    await waitFor(() => noAck.packets.some((p) => p.cmd === 'suback'), 'the SUBACK')
    const watcher = await plain('alice', 'view-noack-watcher')
    await watcher.subscribe({ 'herald/v1/events/readings/+': 1 })
    let last = 0
    for (let i = 0; i < MAX_INFLIGHT + 10; i++) last = (await svc.raise('readings', { i })).seq
    await svc.whenAcked(last)
    const t0 = performance.now()
    await noAck.closed
    expect(performance.now() - t0).toBeGreaterThanOrEqual(SLOW_TIMEOUT_MS / 2)
    expect(noAck.packets.filter((p) => p.cmd === 'publish').length).toBe(MAX_INFLIGHT)
    await waitFor(() => watcher.got.length === MAX_INFLIGHT + 10, 'the acknowledging subscriber: every event')
  })

  it('[PLAIN-VIEW-9] a keyed event is retained per key, under .../k/<key>, the key percent-encoded where MQTT needs it', async () => {
    await raise('thermostat', { device: 't1', c: 20 })
    await raise('thermostat', { device: 'room/2+', c: 21 })
    await raise('thermostat', { device: 't1', c: 22 })
    const s = await plain('alice', 'view-keyed')
    await s.subscribe({ 'herald/v1/events/thermostat/#': 0 })
    await waitFor(() => s.got.length === 2, 'the retained value of each key')
    expect(s.got.map((g) => [g.topic, g.retain, g.env.key, g.env.payload])).toEqual([
      ['herald/v1/events/thermostat/svc-a/k/room%2F2%2B', true, 'room/2+', { device: 'room/2+', c: 21 }],
      ['herald/v1/events/thermostat/svc-a/k/t1', true, 't1', { device: 't1', c: 22 }]
    ])
    // one key only, by its topic; a null of that key goes out live, and clears only it
    const one = await plain('alice', 'view-keyed-one')
    await one.subscribe({ 'herald/v1/events/thermostat/svc-a/k/t1': 0 })
    await waitFor(() => one.got.length === 1, 'the retained value of t1')
    await svc.whenAcked((await svc.raiseNull('thermostat', { key: 't1' })).seq)
    await waitFor(() => one.got.length === 2 && s.got.length === 3, 'the null of t1, live')
    expect(one.got[1]).toMatchObject({ retain: false, topic: 'herald/v1/events/thermostat/svc-a/k/t1', env: { key: 't1', isNull: true } })
    const later = await plain('alice', 'view-keyed-later')
    await later.subscribe({ 'herald/v1/events/thermostat/+/k/+': 0 })
    await waitFor(() => later.got.length === 2, 'both keys again')
    expect(later.got.map((g) => [g.env.key, g.env.isNull])).toEqual([['room/2+', false], ['t1', true]])
  })
})

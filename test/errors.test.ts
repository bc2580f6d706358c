/**
 * Proof 7: unauthorized subscribe, bad credentials, unknown event, oversized payload, malformed frames
 * get typed errors; the connection or process keeps serving others; nothing accepted is lost.
 */
import mqtt, { type MqttClient } from 'mqtt'
import { describe, it, expect, afterEach } from 'vitest'
import type { ServiceEndpoint } from '@herald/service-endpoint'
import { type HeraldError, AuthError, ErrorCode, RequestError, decodeAck, decodeControl, encodeUp, serviceAckTopic, serviceUpTopic, clientMessageTopic, clientRequestTopic, PayloadKind, type AckFrame } from '@herald/protocol'
;
import { waitFor } from '@herald/protocol/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { SECRETS } from './support/site.js'

async function raw (url: string, clientId: string, username: string | undefined, password: string | undefined, topic: string): Promise<{ c: MqttClient, frames: Buffer[] }> {
  const c = mqtt.connect(url, { clientId, protocolVersion: 4, reconnectPeriod: 0, ...(username !== undefined && password !== undefined ? { username, password } : {}) })
  await new Promise<void>((resolve, reject) => { c.once('connect', () => { resolve() }); c.once('error', reject) })
  await c.subscribeAsync(topic, { qos: 0 })
  const frames: Buffer[] = []
  c.on('message', (_t, p) => { frames.push(p) })
  return { c, frames }
}

describe('typed errors, and the rest keeps working', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('subscribing: not authorized, unknown event, bad credentials', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const bob = h.client(broker.url, 'bob', 'app')
    const e1 = await bob.subscribe('alarms', {}, () => {}).catch((e: unknown) => e) // operators only
    expect(e1).toBeInstanceOf(AuthError)
    expect((e1 as AuthError).code).toBe(ErrorCode.NOT_AUTHORIZED)
    expect((e1 as Error).message).toContain('alarms')
    const guest = h.client(broker.url, null, 'kiosk')
    const e2 = await guest.subscribe('readings', {}, () => {}).catch((e: unknown) => e) // authenticated only
    expect((e2 as HeraldError).code).toBe(ErrorCode.NOT_AUTHORIZED)
    const e3 = await bob.subscribe('no-such-event', {}, () => {}).catch((e: unknown) => e)
    expect(e3).toBeInstanceOf(RequestError)
    expect((e3 as HeraldError).code).toBe(ErrorCode.UNKNOWN_EVENT)
    const wrong = h.client(broker.url, 'alice', 'app', { password: 'not-her-password' })
    const e4 = await wrong.subscribe('readings', {}, () => {}).catch((e: unknown) => e)
    expect(e4).toBeInstanceOf(AuthError)
    expect((e4 as HeraldError).code).toBe(ErrorCode.BAD_CREDENTIALS)
    // the same connections still serve what they may have
    const svc = await h.service(broker.url, 'svc-a')
    const ok = await collect(bob, 'temperature')
    const ok2 = await collect(guest, 'temperature')
    await svc.raise('temperature', { t: 1 })
    await ok.until(1)
    await ok2.until(1)
  })

  it('a service with a bad secret reports BAD_CREDENTIALS and keeps its backlog', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a', { secret: 'wrong-secret' })
    await svc.raise('readings', { i: 1 })
    await waitFor(() => svc.status.lastError?.code === ErrorCode.BAD_CREDENTIALS, 'BAD_CREDENTIALS in status')
    expect(svc.status.lastError).toBeInstanceOf(AuthError)
    expect(svc.status.backlog).toBe(1)
  })

  it('raise() refuses unknown events, wrong categories and oversized payloads at once, and keeps nothing of them', async () => {
    h = await Harness.create()
    const svc = await h.service('mqtt://127.0.0.1:9', 'svc-a')
    await expect(svc.raise('nope', 1)).rejects.toMatchObject({ code: ErrorCode.UNKNOWN_EVENT })
    await expect(svc.raise('notices', 1)).rejects.toMatchObject({ code: ErrorCode.WRONG_CATEGORY })
    await expect(svc.raiseNull('readings')).rejects.toMatchObject({ code: ErrorCode.WRONG_CATEGORY })
    await expect(svc.raisePrivate('notices', 'not a key', 1)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT })
    await expect(svc.raise('alarms', 'x'.repeat(2000))).rejects.toMatchObject({ code: ErrorCode.PAYLOAD_TOO_LARGE })
    expect(svc.status.backlog).toBe(0)
  })

  it('events the broker refuses are reported one by one and do not block the backlog', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    // a service whose local event list disagrees with the site: the broker is the judge
    const svc: ServiceEndpoint = await h.service(broker.url, 'svc-a', {
      events: [
        { name: 'readings', category: 'queueing', lifetimeMs: 86_400_000 },
        { name: 'undeclared', category: 'queueing' }, // in the site, but svc-a may not raise it
        { name: 'ghost', category: 'queueing' }, // not in the site at all
        { name: 'temperature', category: 'queueing' }, // replacing in the site
        { name: 'alarms', category: 'queueing', maxPayloadBytes: 1_000_000 } // the site allows 1 KiB
      ]
    })
    const rejected: Array<[string | undefined, string]> = []
    svc.on('rejected', (r) => { rejected.push([r.name, r.error.code]) })
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    await svc.raise('readings', { i: 0 })
    await svc.raise('undeclared', 1)
    await svc.raise('readings', { i: 1 })
    await svc.raise('ghost', 1)
    await svc.raise('temperature', 1)
    await svc.raise('alarms', 'x'.repeat(5000))
    await svc.raise('readings', { i: 2 })
    await svc.drained()
    await c.until(3)
    expect(c.payloads()).toEqual([{ i: 0 }, { i: 1 }, { i: 2 }])
    expect(rejected).toEqual([
      ['undeclared', ErrorCode.NOT_AUTHORIZED],
      ['ghost', ErrorCode.UNKNOWN_EVENT],
      ['temperature', ErrorCode.WRONG_CATEGORY],
      ['alarms', ErrorCode.PAYLOAD_TOO_LARGE]
    ])
    expect(svc.counters.rejected).toBe(4)
    expect(svc.status.backlog).toBe(0)
  })

  it('malformed frames get MALFORMED_FRAME back on the same connection, which goes on serving', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    const svc = await raw(broker.url, 's/svc-b', 'svc-b', SECRETS['svc-b'], serviceAckTopic('svc-b'))
    h.onClose(() => svc.c.endAsync())
    svc.c.publish(serviceUpTopic('svc-b'), Buffer.from([1, 0xff, 0xff, 0xff]))
    await waitFor(() => svc.frames.length >= 1, 'an ACK frame')
    const bad: AckFrame = decodeAck(svc.frames[0] as Buffer)
    expect(bad.error?.code).toBe(ErrorCode.MALFORMED_FRAME)
    // the same connection then uploads a good frame
    const good = encodeUp({ instance: 'raw-1', after: 0, events: [{ seq: 1, name: 'readings', category: 'queueing', raisedAt: Date.now(), age: 0, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('{"raw":true}') }] })
    svc.c.publish(serviceUpTopic('svc-b'), Buffer.from(good))
    await waitFor(() => svc.frames.length >= 2, 'a second ACK frame')
    expect(decodeAck(svc.frames[1] as Buffer)).toMatchObject({ instance: 'raw-1', acked: 1, error: null })
    await c.until(1)
    expect(c.payloads()).toEqual([{ raw: true }])

    const cli = await raw(broker.url, 'c/bob/raw', 'bob', SECRETS.bob, clientMessageTopic('bob/raw'))
    h.onClose(() => cli.c.endAsync())
    cli.c.publish(clientRequestTopic('bob/raw'), Buffer.from([3, 0x7b]))
    await waitFor(() => cli.frames.length >= 1, 'a CONTROL frame')
    expect(decodeControl(cli.frames[0] as Buffer)).toMatchObject({ op: 'error', sub: null, code: ErrorCode.MALFORMED_FRAME })
  })

  it('an oversized MQTT packet or a foreign topic closes that connection only', async () => {
    h = await Harness.create()
    const broker = await h.broker({ maxPacketBytes: 64 * 1024 })
    const svc = await h.service(broker.url, 'svc-a')
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    const big = await raw(broker.url, 's/svc-b', 'svc-b', SECRETS['svc-b'], serviceAckTopic('svc-b'))
    const closed = new Promise<void>((resolve) => { big.c.once('close', () => { resolve() }) })
    big.c.publish(serviceUpTopic('svc-b'), Buffer.alloc(100 * 1024, 1))
    await closed
    big.c.end(true)
    const foreign = await raw(broker.url, 'c/bob/raw', 'bob', SECRETS.bob, clientMessageTopic('bob/raw'))
    const closed2 = new Promise<void>((resolve) => { foreign.c.once('close', () => { resolve() }) })
    foreign.c.publish('some/other/topic', 'hello')
    await closed2
    foreign.c.end(true)
    for (let i = 0; i < 10; i++) await svc.raise('readings', { i })
    await c.until(10)
    expect(c.payloads()).toEqual(Array.from({ length: 10 }, (_, i) => ({ i })))
  })
})

/**
 * Poison frames: an UP frame the store would refuse, or a JSON payload that is not UTF-8, is answered
 * as malformed ([SVC-MALFORMED-1], [SVC-MALFORMED-2], [EVT-PAYLOAD-2]); it never takes the
 * store-failure path (error log, dropped connection, no ACK), so a service is not sent round a loop.
 */
import mqtt, { type MqttClient } from 'mqtt'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryEventStore, createBroker, listenTcp, startBrokerServer, type BrokerServer } from '@herald/broker'
import { ServiceEndpoint, type ServicePersistence } from '@herald/service-endpoint'
import { ConfigError, ErrorCode, PayloadKind, decodeAck, encodeUp, eventsOfService, serviceAckTopic, serviceUpTopic, type Logger, type UpEvent } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'
import { SECRETS, testSite } from './support/site.js'

/** A logger that keeps what it was given, by level. */
function recordingLogger (): Logger & { lines: Array<{ level: string, msg: string | undefined, obj: object }> } {
  const lines: Array<{ level: string, msg: string | undefined, obj: object }> = []
  const at = (level: string) => (obj: object, msg?: string): void => { lines.push({ level, msg, obj }) }
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

function event (seq: number, payload: Uint8Array, over: Partial<UpEvent> = {}): UpEvent {
  return { seq, name: 'readings', category: 'queueing', raisedAt: Date.now(), age: 0, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload, ...over }
}

/** An MQTT connection as service svc-b, receiving its ACK frames. */
async function rawService (url: string): Promise<{ c: MqttClient, acks: Buffer[], closes: () => number }> {
  const c = mqtt.connect(url, { clientId: 's/svc-b', username: 'svc-b', password: SECRETS['svc-b'], protocolVersion: 4, reconnectPeriod: 0 })
  await new Promise<void>((resolve, reject) => { c.once('connect', () => { resolve() }); c.once('error', reject) })
  let closed = 0
  c.on('close', () => { closed++ })
  await c.subscribeAsync(serviceAckTopic('svc-b'), { qos: 0 })
  const acks: Buffer[] = []
  c.on('message', (_t, p) => { acks.push(p) })
  return { c, acks, closes: () => closed }
}

describe('poison UP frames are answered MALFORMED_FRAME and the connection stays', () => {
  let h: Harness
  let server: BrokerServer
  let log: ReturnType<typeof recordingLogger>
  afterEach(async () => { await h.close() })

  async function start (): Promise<void> {
    h = await Harness.create()
    log = recordingLogger()
    server = await startBrokerServer({ site: await testSite(), dataDir: join(h.dir, 'broker'), port: 0, logger: log })
    h.onClose(() => server.close())
  }

  it('an empty persistence instance: MALFORMED_FRAME, nothing stored, no store-failure log, the same connection then uploads', async () => {
    await start()
    const c = await collect(h.client(server.url, 'alice', 'app'), 'readings')
    const svc = await rawService(server.url)
    h.onClose(() => svc.c.endAsync())
    // the same poison frame three times, as a service that resends would
    for (let i = 0; i < 3; i++) svc.c.publish(serviceUpTopic('svc-b'), Buffer.from(encodeUp({ instance: '', after: 0, events: [event(1, Buffer.from('{"poison":true}'))] })))
    await waitFor(() => svc.acks.length >= 3, 'three ACK frames')
    for (const a of svc.acks) {
      expect(decodeAck(a)).toMatchObject({ instance: '', acked: 0, error: { code: ErrorCode.MALFORMED_FRAME, message: 'UP frame: the persistence instance is empty' } })
    }
    expect(server.broker.stats().uplink.malformed).toBe(3)
    expect(server.broker.store.count()).toBe(0)
    expect(log.lines.filter((l) => l.level === 'error')).toEqual([])
    // the connection was never dropped and goes on serving
    svc.c.publish(serviceUpTopic('svc-b'), Buffer.from(encodeUp({ instance: 'raw-1', after: 0, events: [event(1, Buffer.from('{"good":true}'))] })))
    await waitFor(() => svc.acks.length >= 4, 'a fourth ACK frame')
    expect(decodeAck(svc.acks[3] as Buffer)).toMatchObject({ instance: 'raw-1', acked: 1, error: null })
    await c.until(1)
    expect(c.payloads()).toEqual([{ good: true }])
    expect(svc.closes()).toBe(0)
  })

  it('a JSON payload that is not valid UTF-8 is rejected (MALFORMED_FRAME), the events around it are stored unchanged', async () => {
    await start()
    const c = await collect(h.client(server.url, 'alice', 'app'), 'readings')
    const svc = await rawService(server.url)
    h.onClose(() => svc.c.endAsync())
    const cases = [
      Buffer.from([0x22, 0xff, 0x22]), // "\xff": a byte that is never UTF-8
      Buffer.from([0x22, 0xc3, 0x22]), // a truncated two-byte sequence
      Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]), // an encoded surrogate (CESU-8)
      Buffer.from([0x22, 0xc0, 0xaf, 0x22]) // an overlong "/"
    ]
    const events = [event(1, Buffer.from('"before"')), ...cases.map((p, i) => event(i + 2, p)), event(cases.length + 2, Buffer.from('"after ✓"'))]
    svc.c.publish(serviceUpTopic('svc-b'), Buffer.from(encodeUp({ instance: 'raw-utf8', after: 0, events })))
    await waitFor(() => svc.acks.length >= 1, 'an ACK frame')
    const ack = decodeAck(svc.acks[0] as Buffer)
    expect(ack.error).toBeNull()
    expect(ack.acked).toBe(cases.length + 2)
    expect(ack.rejections.map((r) => [r.seq, r.code, r.message])).toEqual(cases.map((_p, i) => [i + 2, ErrorCode.MALFORMED_FRAME, `payload of seq ${i + 2} is marked JSON but is not valid UTF-8`]))
    await c.until(2)
    expect(c.payloads()).toEqual(['before', 'after ✓'])
    expect(server.broker.store.count()).toBe(2)
    // bytes payloads are any bytes
    svc.c.publish(serviceUpTopic('svc-b'), Buffer.from(encodeUp({ instance: 'raw-utf8', after: cases.length + 2, events: [event(cases.length + 3, Buffer.from([0xff, 0xfe]), { payloadKind: PayloadKind.bytes })] })))
    await c.until(3)
    expect(c.payloads()[2]).toEqual(Uint8Array.of(0xff, 0xfe))
  })
})

describe('JSON that raise() encodes is always valid UTF-8', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('strings with lone surrogates and non-BMP characters are stored and delivered unchanged, none rejected', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a', { memoryOnly: true })
    let rejected = 0
    svc.on('rejected', () => { rejected++ })
    const c = await collect(h.client(broker.url, 'alice', 'app'), 'readings')
    const payloads = [{ s: '\ud800' }, { s: 'x\udfffy' }, { s: '😀 ü €' }, '\u0000']
    for (const p of payloads) await svc.raise('readings', p)
    await svc.drained()
    await c.until(payloads.length)
    expect(c.payloads()).toEqual(payloads)
    expect(rejected).toBe(0)
  })
})

describe('a store that refuses a batch the uplink accepted', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('is answered MALFORMED_FRAME, not as a store failure: the connection stays and later frames are stored', async () => {
    h = await Harness.create()
    const site = await testSite()
    const log = recordingLogger()
    // a store whose limits disagree with the site: it does not know "temperature"
    const store = new MemoryEventStore({ limitsOf: (name) => name === 'temperature' ? undefined : site.events.get(name) })
    const broker = await createBroker({ site, store, logger: log })
    const listener = await listenTcp(broker, { port: 0, host: '127.0.0.1' })
    h.onClose(async () => { await listener.close(); await broker.close() })
    const url = `mqtt://127.0.0.1:${listener.address.port}`
    const svc = await rawService(url)
    h.onClose(() => svc.c.endAsync())
    svc.c.publish(serviceUpTopic('svc-b'), Buffer.from(encodeUp({ instance: 'raw-2', after: 0, events: [event(1, Buffer.from('21'), { name: 'temperature', category: 'replacing' })] })))
    await waitFor(() => svc.acks.length >= 1, 'an ACK frame')
    expect(decodeAck(svc.acks[0] as Buffer)).toMatchObject({ instance: 'raw-2', acked: 0, error: { code: ErrorCode.MALFORMED_FRAME } })
    expect(log.lines.filter((l) => l.msg === 'event store append failed')).toEqual([])
    // the frame was forgotten: the same seq is accepted again once it is valid
    svc.c.publish(serviceUpTopic('svc-b'), Buffer.from(encodeUp({ instance: 'raw-2', after: 0, events: [event(1, Buffer.from('1'))] })))
    await waitFor(() => svc.acks.length >= 2, 'a second ACK frame')
    expect(decodeAck(svc.acks[1] as Buffer)).toMatchObject({ instance: 'raw-2', acked: 1, error: null })
    expect(store.count()).toBe(1)
    expect(svc.closes()).toBe(0)
  })
})

describe('a service endpoint cannot send a frame without an instance', () => {
  it('a persistence whose instance is empty is refused at construction with a ConfigError', async () => {
    const site = await testSite()
    for (const instance of ['', 'x'.repeat(257)]) {
      const persistence = { instance, lastSeq: () => 0 } as unknown as ServicePersistence
      expect(() => new ServiceEndpoint({ url: 'mqtt://127.0.0.1:9', serviceId: 'svc-b', secret: SECRETS['svc-b'], events: eventsOfService(site, 'svc-b'), persistence }))
        .toThrow(ConfigError)
      expect(() => new ServiceEndpoint({ url: 'mqtt://127.0.0.1:9', serviceId: 'svc-b', secret: SECRETS['svc-b'], events: eventsOfService(site, 'svc-b'), persistence }))
        .toThrow('ServiceEndpoint: persistence.instance must be a non-empty string of at most 256 bytes (it names every event it raised, [EVT-ID-1])')
    }
  })
})

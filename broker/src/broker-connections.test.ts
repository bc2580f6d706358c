/**
 * Connection limits, idle and CONNECT timeouts, retain and will refusal, and login throttling, on a
 * real broker over real TCP sockets, each test connection from its own 127.x.y.z source address.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { clientMessageTopic, clientRequestTopic, encodeRequest, type Logger, type Site } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { createBroker, type Broker, type BrokerOptions } from './broker.js'
import { MemoryEventStore } from './event-store/memory-event-store.js'
import { listenTcp, type TcpListener } from './listeners/tcp-listener.js'
import { RawMqtt, rawLogin } from './testing/raw-mqtt.js'

const PASSWORD = 'alice-password'
let site: Promise<Site> | null = null
const testSite = (): Promise<Site> => {
  site ??= parseSite({
    guests: true,
    events: [{ name: 'temperature', category: 'replacing', access: 'everyone' }],
    services: [{ id: 'svc', secret: 'svc-secret-1', events: ['temperature'] }],
    users: [{ name: 'alice', password: PASSWORD }, { name: 'bob', password: 'bob-password' }]
  })
  return site
}

let running: { broker: Broker, listener: TcpListener } | null = null
const open: RawMqtt[] = []
afterEach(async () => {
  for (const c of open.splice(0)) c.destroy()
  await running?.listener.close()
  await running?.broker.close()
  running = null
})

async function start (options: Partial<BrokerOptions> = {}): Promise<{ broker: Broker, port: number }> {
  const s = await testSite()
  const broker = await createBroker({ site: s, store: new MemoryEventStore({ limitsOf: (n) => s.events.get(n) }), ...options })
  const listener = await listenTcp(broker, { port: 0 })
  running = { broker, listener }
  return { broker, port: listener.address.port }
}

/** A connection kept open, with its CONNACK code (null: closed without one). */
async function conn (port: number, localAddress: string, clientId: string, extra: Record<string, unknown> = {}): Promise<{ c: RawMqtt, code: number | null }> {
  const c = new RawMqtt({ port, localAddress, connect: { clientId, ...extra } })
  open.push(c)
  return { c, code: await c.connack }
}
const guest = (port: number, localAddress: string, name: string): Promise<{ c: RawMqtt, code: number | null }> => conn(port, localAddress, `c/~guest/${name}`)
const alice = (port: number, localAddress: string, name: string, password = PASSWORD): Promise<{ c: RawMqtt, code: number | null }> =>
  conn(port, localAddress, `c/alice/${name}`, { username: 'alice', password: Buffer.from(password) })

describe('broker connection limits', () => {
  it('admits exactly maxConnections connections; the next is closed before it is served, and a freed place is taken again', async () => {
    const { broker, port } = await start({ maxConnections: 3 })
    const admitted = [await guest(port, '127.0.3.1', 'a'), await guest(port, '127.0.3.2', 'b'), await guest(port, '127.0.3.3', 'c')]
    expect(admitted.map((x) => x.code)).toEqual([0, 0, 0])
    const fourth = await guest(port, '127.0.3.4', 'd')
    expect(fourth.code).toBeNull()
    expect(broker.stats().connections).toBe(3)
    expect(broker.stats().connectionsRefused.maxConnections).toBe(1)
    admitted[0]!.c.destroy()
    await waitFor(() => broker.stats().connections === 2, 'the closed connection counted out')
    expect((await guest(port, '127.0.3.4', 'd')).code).toBe(0)
  })

  it('bounds connections per source address, and guests per address tighter than users', async () => {
    const { broker, port } = await start({ maxConnectionsPerAddress: 4, maxGuestConnectionsPerAddress: 2 })
    expect((await guest(port, '127.0.4.1', 'g1')).code).toBe(0)
    expect((await guest(port, '127.0.4.1', 'g2')).code).toBe(0)
    // a third guest from that address is refused with CONNACK 3 (server unavailable) ...
    expect((await guest(port, '127.0.4.1', 'g3')).code).toBe(3)
    expect(broker.stats().connectionsRefused.guestsPerAddress).toBe(1)
    // ... a takeover of a guest's own client id is not a new connection ...
    expect((await guest(port, '127.0.4.1', 'g2')).code).toBe(0)
    // ... and a user from the same address, or a guest from another, still gets in
    expect((await alice(port, '127.0.4.1', 'app')).code).toBe(0)
    expect((await guest(port, '127.0.4.2', 'g3')).code).toBe(0)
    // 4 connections are open from 127.0.4.1 once the taken-over one has closed: a 5th is closed unserved
    await waitFor(() => broker.stats().connections === 4, 'the taken-over connection closed')
    expect((await alice(port, '127.0.4.1', 'app2')).code).toBe(0)
    expect((await alice(port, '127.0.4.1', 'app3')).code).toBeNull()
    expect(broker.stats().connectionsRefused.perAddress).toBe(1)
    // by kind (for /metrics): the taken-over guest and the refused ones are not counted
    await waitFor(() => broker.stats().connections === 5, 'the refused connection closed')
    expect(broker.stats().connectionsByKind).toEqual({ service: 0, client: 2, guest: 3, plain: 0, pending: 0 })
  })

  it('bounds connections from one address that have not logged in yet', async () => {
    const { broker, port } = await start({ maxPendingConnectionsPerAddress: 3 })
    const silent = [0, 1, 2].map(() => new RawMqtt({ port, localAddress: '127.0.13.1', connect: null }))
    open.push(...silent)
    await waitFor(() => broker.stats().connections === 3, 'three silent connections accepted')
    expect((await guest(port, '127.0.13.1', 'late')).code).toBeNull()
    expect(broker.stats().connectionsRefused.pendingPerAddress).toBe(1)
    expect((await guest(port, '127.0.13.2', 'elsewhere')).code).toBe(0)
    expect(broker.stats().connectionsByKind).toEqual({ service: 0, client: 0, guest: 1, plain: 0, pending: 3 })
    // one of the silent ones logs in: it no longer counts as pending, and another may come
    silent[0]!.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: 'c/~guest/s0' })
    expect(await silent[0]!.connack).toBe(0)
    expect((await guest(port, '127.0.13.1', 'late')).code).toBe(0)
  })

  it('bounds guest connections in total and connections per user', async () => {
    const { broker, port } = await start({ maxGuestConnections: 2, maxConnectionsPerUser: 2 })
    expect((await guest(port, '127.0.5.1', 'a')).code).toBe(0)
    expect((await guest(port, '127.0.5.2', 'b')).code).toBe(0)
    expect((await guest(port, '127.0.5.3', 'c')).code).toBe(3)
    expect((await alice(port, '127.0.5.4', 'one')).code).toBe(0)
    expect((await alice(port, '127.0.5.5', 'two')).code).toBe(0)
    expect((await alice(port, '127.0.5.6', 'three')).code).toBe(3)
    expect(await conn(port, '127.0.5.7', 'c/bob/x', { username: 'bob', password: Buffer.from('bob-password') })).toMatchObject({ code: 0 })
    expect(broker.stats().connectionsRefused).toMatchObject({ guests: 1, perUser: 1 })
  })

  it('closes a connection with keepalive 0 that stays silent for 1.5 times maxKeepaliveSec, and keeps one that pings', async () => {
    const { broker, port } = await start({ maxKeepaliveSec: 1 })
    const silent = await guest(port, '127.0.6.1', 'silent')
    const pinging = await conn(port, '127.0.6.2', 'c/~guest/pinging', { keepalive: 1 })
    expect([silent.code, pinging.code]).toEqual([0, 0])
    const ping = setInterval(() => { pinging.c.send({ cmd: 'pingreq' }) }, 300)
    try {
      const zero = await conn(port, '127.0.6.3', 'c/~guest/zero', { keepalive: 0 })
      expect(zero.code).toBe(0)
      let closedAt = 0
      void zero.c.closed.then(() => { closedAt = Date.now() })
      const t0 = Date.now()
      await waitFor(() => closedAt > 0, 'the silent keepalive-0 connection closed', 20_000)
      expect(closedAt - t0).toBeGreaterThanOrEqual(1400)
      await waitFor(() => broker.stats().connectionsRefused.idle >= 2, 'both silent connections counted', 20_000)
      expect(pinging.c.socket.destroyed).toBe(false)
      expect(pinging.c.packets.filter((p) => p.cmd === 'pingresp').length).toBeGreaterThan(0)
    } finally {
      clearInterval(ping)
    }
  })

  it('closes a connection that sends no CONNECT, or only part of one, within connectTimeoutMs', async () => {
    const { broker, port } = await start({ connectTimeoutMs: 300 })
    const none = new RawMqtt({ port, localAddress: '127.0.7.1', connect: null })
    const part = new RawMqtt({ port, localAddress: '127.0.7.2', connect: null })
    open.push(none, part)
    part.socket.write(Buffer.from([0x10, 0x20, 0x00, 0x04, 0x4d]))
    await Promise.all([none.closed, part.closed])
    expect([await none.connack, await part.connack]).toEqual([null, null])
    expect(broker.stats().connectionsRefused.connectTimeout).toBe(2)
    await waitFor(() => broker.stats().connections === 0, 'both counted out')
  })

  it('refuses a PUBLISH with the retain flag by closing the connection, and retains nothing', async () => {
    const { broker, port } = await start()
    const g = await guest(port, '127.0.8.1', 'kiosk')
    expect(g.code).toBe(0)
    g.c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: clientMessageTopic('~guest/kiosk'), qos: 0 }] })
    await waitFor(() => g.c.packets.some((p) => p.cmd === 'suback'), 'suback')
    // a valid request frame, on the guest's own request topic, with retain set and a 1 MiB tail
    const frame = encodeRequest({ op: 'sub', sub: 1, event: 'temperature', services: null, position: 0, start: 'all', window: 10 })
    g.c.send({ cmd: 'publish', topic: clientRequestTopic('~guest/kiosk'), payload: Buffer.concat([frame, Buffer.alloc(1024 * 1024)]), qos: 0, retain: true, dup: false })
    await g.c.closed
    expect(g.c.packets.filter((p) => p.cmd === 'publish')).toEqual([])
    expect(broker.stats().connectionsRefused.retain).toBe(1)
    expect(await broker.retainedCount()).toBe(0)
    // the same request without retain is served
    const h = await guest(port, '127.0.8.1', 'kiosk')
    h.c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: clientMessageTopic('~guest/kiosk'), qos: 0 }] })
    await waitFor(() => h.c.packets.some((p) => p.cmd === 'suback'), 'suback')
    h.c.send({ cmd: 'publish', topic: clientRequestTopic('~guest/kiosk'), payload: Buffer.from(frame), qos: 0, retain: false, dup: false })
    await waitFor(() => h.c.packets.some((p) => p.cmd === 'publish'), 'the subscription answered')
  })

  it('refuses will messages and persistent sessions with CONNACK 5', async () => {
    const { broker, port } = await start()
    const will = await conn(port, '127.0.9.1', 'c/~guest/w', { will: { topic: clientRequestTopic('~guest/w'), payload: Buffer.alloc(1024), qos: 0, retain: true } })
    const persistent = await conn(port, '127.0.9.2', 'c/~guest/p', { clean: false })
    expect([will.code, persistent.code]).toEqual([5, 5])
    expect(broker.stats().connectionsRefused).toMatchObject({ will: 1, persistentSession: 1 })
    expect(await broker.retainedCount()).toBe(0)
  })
})

describe('broker login throttling', () => {
  it('refuses an address unchecked once its failure budget is spent, even with the right password, and not other addresses', async () => {
    const { broker, port } = await start({ loginFailuresPerAddress: 3, loginFailuresPerName: 100 })
    for (let i = 0; i < 3; i++) expect((await rawLogin({ port, localAddress: '127.0.10.1', connect: { clientId: 'c/alice/x', username: 'alice', password: Buffer.from(`wrong-${i}`) } })).returnCode).toBe(4)
    const blocked = await rawLogin({ port, localAddress: '127.0.10.1', connect: { clientId: 'c/alice/x', username: 'alice', password: Buffer.from(PASSWORD) } })
    expect(blocked.returnCode).toBe(3)
    expect((await rawLogin({ port, localAddress: '127.0.10.2', connect: { clientId: 'c/alice/x', username: 'alice', password: Buffer.from(PASSWORD) } })).returnCode).toBe(0)
    // unknown services count like unknown users: one budget per name, one per address
    expect((await rawLogin({ port, localAddress: '127.0.10.1', connect: { clientId: 's/nope', username: 'nope', password: Buffer.from('x') } })).returnCode).toBe(3)
    expect(broker.stats().logins).toEqual({ checks: 4, succeeded: 1, failed: 3, throttled: 2, busy: 0 })
    expect(broker.stats().connectionsRefused.throttled).toBe(2)
  })

  it('logs failed and throttled logins with address and name, never the password, and at most one throttled line per second', async () => {
    const lines: Array<{ level: string, obj: object, msg: string | undefined }> = []
    const logger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((level) => [level, (obj: object, msg?: string) => { lines.push({ level, obj, msg }) }])) as unknown as Logger
    const { port } = await start({ loginFailuresPerAddress: 2, logger })
    const secret = 'correct-horse-battery-staple'
    const guess = (i: number): ReturnType<typeof rawLogin> => rawLogin({ port, localAddress: '127.0.12.1', connect: { clientId: `c/alice/x${i}`, username: 'alice', password: Buffer.from(`${secret}-${i}`) } })
    for (let i = 0; i < 2; i++) expect((await guess(i)).returnCode).toBe(4)
    // 6 at once, all throttled and answered together after the longest delay
    expect((await Promise.all([2, 3, 4, 5, 6, 7].map(guess))).map((r) => r.returnCode)).toEqual([3, 3, 3, 3, 3, 3])
    const text = lines.map((l) => `${l.msg ?? ''} ${JSON.stringify(l.obj)}`)
    expect(text.filter((t) => t.startsWith('login failed'))).toHaveLength(2)
    expect(text.find((t) => t.startsWith('login failed'))).toContain('127.0.12.1')
    expect(text.find((t) => t.startsWith('login failed'))).toContain('"name":"alice"')
    const throttled = text.filter((t) => t.includes('connection refused: too many failed logins'))
    expect(throttled.length).toBeGreaterThan(0)
    expect(throttled.length).toBeLessThan(6)
    expect(text.some((t) => t.includes(secret))).toBe(false)
  })

  it('refuses a name guessed from many addresses from new addresses, but lets in an address it logged in from', async () => {
    const { port } = await start({ loginFailuresPerName: 3 })
    const login = (localAddress: string, password: string): Promise<number | null> =>
      rawLogin({ port, localAddress, connect: { clientId: 'c/alice/app', username: 'alice', password: Buffer.from(password) } }).then((r) => r.returnCode)
    expect(await login('127.0.11.1', PASSWORD)).toBe(0)
    for (let i = 0; i < 3; i++) expect(await login(`127.0.11.${10 + i}`, 'wrong')).toBe(4)
    expect(await login('127.0.11.20', PASSWORD)).toBe(3)
    expect(await login('127.0.11.1', PASSWORD)).toBe(0)
  })
})

describe('plain MQTT logins [PLAIN-LOGIN-1], [PLAIN-LOGIN-2]', () => {
  it('a client id not of Herald\'s form logs in as a user, a service or a guest; a wrong secret or an unknown name gets 4', async () => {
    const { broker, port } = await start()
    const codes = await Promise.all([
      conn(port, '127.0.9.1', 'mqtt-explorer-1', { username: 'alice', password: Buffer.from(PASSWORD) }),
      conn(port, '127.0.9.2', 'esp32-boiler', { username: 'svc', password: Buffer.from('svc-secret-1') }),
      conn(port, '127.0.9.3', 'anonymous-dashboard'),
      conn(port, '127.0.9.4', 'wrong', { username: 'alice', password: Buffer.from('not-her-password') }),
      conn(port, '127.0.9.5', 'unknown', { username: 'mallory', password: Buffer.from('whatever-1') }),
      conn(port, '127.0.9.6', 'svc-wrong', { username: 'svc', password: Buffer.from('bad-secret-1') })
    ])
    expect(codes.map((x) => x.code)).toEqual([0, 0, 0, 4, 4, 4])
    await waitFor(() => broker.stats().connections === 3, 'the refused connections to close')
    expect(broker.stats().connectionsByKind).toEqual({ service: 0, client: 0, guest: 0, plain: 3, pending: 0 })
  })

  it('a site without guests refuses a plain client without a user name with 5', async () => {
    const s = await parseSite({ events: [{ name: 'temperature', category: 'replacing' }], users: [{ name: 'alice', password: PASSWORD }] })
    const broker = await createBroker({ site: s, store: new MemoryEventStore({ limitsOf: (n) => s.events.get(n) }) })
    const listener = await listenTcp(broker, { port: 0 })
    running = { broker, listener }
    expect((await conn(listener.address.port, '127.0.9.7', 'anonymous')).code).toBe(5)
  })

  it('another login cannot take over a plain client id in use (CONNACK 2, the first stays); the same login can', async () => {
    const { broker, port } = await start()
    const first = await conn(port, '127.0.9.8', 'shared-id', { username: 'alice', password: Buffer.from(PASSWORD) })
    expect(first.code).toBe(0)
    const byBob = await conn(port, '127.0.9.9', 'shared-id', { username: 'bob', password: Buffer.from('bob-password') })
    const byGuest = await conn(port, '127.0.9.10', 'shared-id')
    expect([byBob.code, byGuest.code]).toEqual([2, 2])
    expect(broker.stats().connectionsRefused.clientIdInUse).toBe(2)
    await waitFor(() => broker.stats().connections === 1, 'the refused connections to close')
    const again = await conn(port, '127.0.9.11', 'shared-id', { username: 'alice', password: Buffer.from(PASSWORD) })
    expect(again.code).toBe(0)
    await first.c.closed
  })
})

/**
 * webSocketTransport's logic against a scripted WebSocket and a ManualClock (no sockets, no real
 * time): the MQTT handshake, refusals as typed errors, framing, keepalive, bounds, end(). The same
 * transport against a real broker over real WebSockets: test/websocket-transport.test.ts.
 */
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { AuthError, ConfigError, ErrorCode, HeraldError, ManualClock, type DialOptions, type TransportConnection } from '@herald/protocol'
import { webSocketTransport, webSocketUrl, type WebSocketConstructor, type WebSocketLike } from './websocket-transport.js'

/** A WebSocket the test plays the server of. */
class ScriptedWebSocket implements WebSocketLike {
  static readonly made: ScriptedWebSocket[] = []
  binaryType = 'blob'
  bufferedAmount = 0
  protocol = ''
  readonly sent: Uint8Array[] = []
  closedWith: Array<number | undefined> = []
  onopen: ((event: never) => void) | null = null
  onmessage: ((event: never) => void) | null = null
  onclose: ((event: never) => void) | null = null
  onerror: ((event: never) => void) | null = null

  constructor (readonly url: string, readonly protocols: string[]) {
    ScriptedWebSocket.made.push(this)
  }

  send (data: Uint8Array): void { this.sent.push(data.slice()) }
  close (code?: number): void { this.closedWith.push(code) }

  /** The handshake completed with `protocol` chosen. */
  serverOpen (protocol = 'mqtt'): void {
    this.protocol = protocol
    ;(this.onopen as ((e: unknown) => void) | null)?.({})
  }

  serverSend (data: Uint8Array | string): void {
    ;(this.onmessage as ((e: { data: unknown }) => void) | null)?.({ data: typeof data === 'string' ? data : data.slice().buffer })
  }

  serverPacket (p: Parameters<typeof mqttPacket.generate>[0]): void {
    this.serverSend(new Uint8Array(mqttPacket.generate(p)))
  }

  serverClose (code: number, reason = ''): void {
    ;(this.onclose as ((e: { code: number, reason: string, wasClean: boolean }) => void) | null)?.({ code, reason, wasClean: true })
  }

  /** What the client sent, parsed by mqtt-packet. */
  packets (): Packet[] {
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    const out: Packet[] = []
    parser.on('packet', (p) => out.push(p))
    for (const s of this.sent) parser.parse(Buffer.from(s))
    return out
  }

  commands (): string[] {
    return this.packets().map((p) => p.cmd)
  }
}

const Scripted = ScriptedWebSocket as unknown as WebSocketConstructor

const DIAL: DialOptions = {
  url: 'ws://127.0.0.1:9001',
  clientId: 'herald-c-ops/dash',
  username: 'ops',
  password: 'secret',
  replyTopic: 'herald/c/ops/dash/m',
  connectTimeoutMs: 5000,
  keepaliveSec: 30
}

interface Attempt {
  conn: TransportConnection
  ws: ScriptedWebSocket
  opened: number
  frames: Uint8Array[]
  closes: Array<HeraldError | null>
}

let clock: ManualClock

function dial (options: Partial<DialOptions> = {}, transportOptions: Parameters<typeof webSocketTransport>[0] = {}): Attempt {
  const before = ScriptedWebSocket.made.length
  const a: Partial<Attempt> & { frames: Uint8Array[], closes: Array<HeraldError | null>, opened: number } = { frames: [], closes: [], opened: 0 }
  a.conn = webSocketTransport({ WebSocket: Scripted, clock, ...transportOptions }).dial({ ...DIAL, ...options }, {
    open: () => { a.opened++ },
    frame: (p) => { a.frames.push(p) },
    close: (e) => { a.closes.push(e) }
  })
  const ws = ScriptedWebSocket.made[before]
  if (ws !== undefined) a.ws = ws
  return a as Attempt
}

/** Dials and plays a broker that accepts the connection and the subscription. */
function openAttempt (options: Partial<DialOptions> = {}, transportOptions: Parameters<typeof webSocketTransport>[0] = {}): Attempt {
  const a = dial(options, transportOptions)
  a.ws.serverOpen()
  a.ws.serverPacket({ cmd: 'connack', returnCode: 0, sessionPresent: false })
  a.ws.serverPacket({ cmd: 'suback', messageId: 1, granted: [0] })
  expect(a.opened).toBe(1)
  return a
}

function publish (topic: string, payload: Uint8Array): Uint8Array {
  return new Uint8Array(mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, dup: false, retain: false }))
}

afterEach(() => {
  ScriptedWebSocket.made.length = 0
})

describe('webSocketTransport options', () => {
  it('a wrong option, or no WebSocket class anywhere, is a ConfigError naming it', () => {
    expect(() => webSocketTransport({ WebSocket: Scripted, maxPacketBytes: 10 })).toThrow(/option "maxPacketBytes" must be a whole number from 1024/)
    expect(() => webSocketTransport({ WebSocket: Scripted, pingTimeoutMs: -1 })).toThrow(/pingTimeoutMs/)
    expect(() => webSocketTransport({ WebSocket: Scripted, maxBufferedBytes: 1.5 })).toThrow(/maxBufferedBytes/)
    expect(() => webSocketTransport({ WebSocket: Scripted, bogus: 1 } as never)).toThrow(/unknown option "bogus"/)
    const g = globalThis as { WebSocket?: unknown }
    const saved = g.WebSocket
    try {
      delete g.WebSocket
      expect(() => webSocketTransport()).toThrow(/give option "WebSocket"/)
    } finally {
      if (saved !== undefined) g.WebSocket = saved
    }
  })

  it('URLs: ws:// and wss:// only; no path means /mqtt; a path or query is kept', () => {
    expect(webSocketUrl('ws://127.0.0.1:9001')).toBe('ws://127.0.0.1:9001/mqtt')
    expect(webSocketUrl('wss://broker.example:443/')).toBe('wss://broker.example/mqtt')
    expect(webSocketUrl('ws://h:1/custom/path?x=1')).toBe('ws://h:1/custom/path?x=1')
    expect(() => webSocketUrl('mqtt://h:1883')).toThrow(ConfigError)
    expect(() => webSocketUrl('http://h:1')).toThrow(/not a ws:\/\/ or wss:\/\/ URL/)
    expect(() => webSocketUrl('not a url')).toThrow(/is not a URL/)
  })
})

describe('webSocketTransport connecting', () => {
  it('opens the WebSocket with subprotocol mqtt and binary messages as ArrayBuffer, then CONNECT, SUBSCRIBE, open', () => {
    clock = new ManualClock()
    const a = dial()
    expect(a.ws.url).toBe('ws://127.0.0.1:9001/mqtt')
    expect(a.ws.protocols).toEqual(['mqtt'])
    expect(a.ws.binaryType).toBe('arraybuffer')
    a.ws.serverOpen()
    expect(a.ws.packets()).toMatchObject([{ cmd: 'connect', protocolVersion: 4, clean: true, clientId: 'herald-c-ops/dash', username: 'ops', keepalive: 30 }])
    a.ws.serverPacket({ cmd: 'connack', returnCode: 0, sessionPresent: false })
    expect(a.ws.packets()[1]).toMatchObject({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'herald/c/ops/dash/m', qos: 0 }] })
    expect(a.opened).toBe(0)
    a.ws.serverPacket({ cmd: 'suback', messageId: 1, granted: [0] })
    expect(a.opened).toBe(1)
    expect(a.closes).toEqual([])
  })

  it('a URL that is not ws:// is a ConfigError reported as the close, after dial() returned, once', () => {
    clock = new ManualClock()
    const a = dial({ url: 'mqtt://127.0.0.1:1883' })
    expect(ScriptedWebSocket.made).toHaveLength(0)
    expect(a.closes).toEqual([])
    clock.runDeferred()
    expect(a.closes).toHaveLength(1)
    expect(a.closes[0]).toBeInstanceOf(ConfigError)
    clock.advance(60_000)
    expect(a.closes).toHaveLength(1)
  })

  it('a password without a user name is a ConfigError; end() before it is reported reports it then, once', async () => {
    clock = new ManualClock()
    const a = dial({ username: undefined })
    await a.conn.end()
    expect(a.closes).toHaveLength(1)
    expect(a.closes[0]?.message).toMatch(/password needs a user name/)
    clock.runDeferred()
    expect(a.closes).toHaveLength(1)
  })

  it('a constructor that throws (a browser refusing ws:// from an https:// page) closes with CONNECTION_LOST naming it', () => {
    clock = new ManualClock()
    const Throwing = class { constructor () { throw new Error('The operation is insecure.') } } as unknown as WebSocketConstructor
    const closes: Array<HeraldError | null> = []
    webSocketTransport({ WebSocket: Throwing, clock }).dial(DIAL, { open: () => {}, frame: () => {}, close: (e) => closes.push(e) })
    clock.runDeferred()
    expect(closes).toHaveLength(1)
    expect(closes[0]?.code).toBe(ErrorCode.CONNECTION_LOST)
    expect(closes[0]?.message).toMatch(/The operation is insecure.*a page served over https:\/\/ may only open wss:\/\//)
  })

  it('CONNACK refusals are typed as Node\'s transport types them: 4 BAD_CREDENTIALS, 5 and 2 NOT_AUTHORIZED, 3 CONNECTION_LOST', () => {
    for (const [returnCode, code, cls] of [[4, ErrorCode.BAD_CREDENTIALS, AuthError], [5, ErrorCode.NOT_AUTHORIZED, AuthError], [2, ErrorCode.NOT_AUTHORIZED, AuthError], [3, ErrorCode.CONNECTION_LOST, HeraldError]] as const) {
      clock = new ManualClock()
      const a = dial()
      a.ws.serverOpen()
      a.ws.serverPacket({ cmd: 'connack', returnCode, sessionPresent: false })
      expect(a.closes, `return code ${returnCode}`).toHaveLength(1)
      expect(a.closes[0]).toBeInstanceOf(cls)
      expect(a.closes[0]?.code).toBe(code)
      expect(a.opened).toBe(0)
      expect(a.ws.closedWith).toHaveLength(1)
      expect(a.ws.commands()).toEqual(['connect'])
    }
  })

  it('a refused subscription to the reply topic is NOT_AUTHORIZED naming the topic', () => {
    clock = new ManualClock()
    const a = dial()
    a.ws.serverOpen()
    a.ws.serverPacket({ cmd: 'connack', returnCode: 0, sessionPresent: false })
    a.ws.serverPacket({ cmd: 'suback', messageId: 1, granted: [128] })
    expect(a.opened).toBe(0)
    expect(a.closes[0]).toBeInstanceOf(AuthError)
    expect(a.closes[0]?.code).toBe(ErrorCode.NOT_AUTHORIZED)
    expect(a.closes[0]?.message).toBe('the broker refused the subscription to herald/c/ops/dash/m')
  })

  it('a server that does not choose the mqtt subprotocol is refused', () => {
    clock = new ManualClock()
    const a = dial()
    a.ws.serverOpen('')
    expect(a.closes[0]?.message).toMatch(/did not accept the subprotocol mqtt/)
    expect(a.ws.sent).toHaveLength(0)
  })

  it('connect timeout: no handshake, no CONNACK, or no SUBACK within connectTimeoutMs closes with CONNECTION_LOST saying which', () => {
    const stages: Array<[(ws: ScriptedWebSocket) => void, RegExp]> = [
      [() => {}, /no WebSocket connection to ws:\/\/127\.0\.0\.1:9001\/mqtt within 5000 ms/],
      [(ws) => { ws.serverOpen() }, /did not answer CONNECT within 5000 ms/],
      [(ws) => { ws.serverOpen(); ws.serverPacket({ cmd: 'connack', returnCode: 0, sessionPresent: false }) }, /did not answer SUBSCRIBE within 5000 ms/]
    ]
    for (const [play, message] of stages) {
      clock = new ManualClock()
      const a = dial()
      play(a.ws)
      clock.advance(4999)
      expect(a.closes).toEqual([])
      clock.advance(1)
      expect(a.closes).toHaveLength(1)
      expect(a.closes[0]?.code).toBe(ErrorCode.CONNECTION_LOST)
      expect(a.closes[0]?.message).toMatch(message)
      expect(a.ws.closedWith).toHaveLength(1)
    }
  })

  it('a close before CONNACK says what to check (the port, the path, wss://)', () => {
    clock = new ManualClock()
    const a = dial()
    a.ws.serverClose(1006)
    expect(a.closes[0]?.code).toBe(ErrorCode.CONNECTION_LOST)
    expect(a.closes[0]?.message).toMatch(/before answering CONNECT, or refused the upgrade \(code 1006\).*herald broker --ws-port.*\/mqtt/)
    expect(clock.pendingTimers).toBe(0)
  })
})

describe('webSocketTransport open', () => {
  it('frames on the reply topic arrive whole, however the WebSocket messages split or join the packets', () => {
    clock = new ManualClock()
    const a = openAttempt()
    const p1 = publish('herald/c/ops/dash/m', Uint8Array.of(1, 2, 3))
    const p2 = publish('herald/c/ops/dash/m', new Uint8Array(3000).fill(9))
    const p3 = publish('herald/c/ops/dash/m', Uint8Array.of())
    const all = new Uint8Array([...p1, ...p2, ...p3])
    a.ws.serverSend(all.subarray(0, 2))
    a.ws.serverSend(all.subarray(2, p1.byteLength + 10))
    a.ws.serverSend(all.subarray(p1.byteLength + 10))
    expect(a.frames).toEqual([Uint8Array.of(1, 2, 3), new Uint8Array(3000).fill(9), Uint8Array.of()])
  })

  it('send is a PUBLISH at QoS 0 on the topic; nothing is sent before open or after end', async () => {
    clock = new ManualClock()
    const a = dial()
    a.conn.send('herald/c/ops/dash/q', Uint8Array.of(7))
    a.ws.serverOpen()
    a.ws.serverPacket({ cmd: 'connack', returnCode: 0, sessionPresent: false })
    a.ws.serverPacket({ cmd: 'suback', messageId: 1, granted: [0] })
    a.conn.send('herald/c/ops/dash/q', Uint8Array.of(8, 9))
    const last = a.ws.packets().at(-1) as { cmd: string, topic: string, qos: number, payload: Buffer }
    expect(last).toMatchObject({ cmd: 'publish', topic: 'herald/c/ops/dash/q', qos: 0 })
    expect([...last.payload]).toEqual([8, 9])
    await a.conn.end()
    a.conn.send('herald/c/ops/dash/q', Uint8Array.of(10))
    expect(a.ws.commands()).toEqual(['connect', 'subscribe', 'publish', 'disconnect'])
  })

  it('end() sends DISCONNECT, closes the WebSocket with 1000, reports close(null) once; events after it are ignored', async () => {
    clock = new ManualClock()
    const a = openAttempt()
    await a.conn.end()
    await a.conn.end()
    expect(a.closes).toEqual([null])
    expect(a.ws.closedWith).toEqual([1000])
    expect(a.ws.commands().at(-1)).toBe('disconnect')
    // a late close event or message goes nowhere (handlers detached)
    expect(a.ws.onclose).toBeNull()
    expect(a.ws.onmessage).toBeNull()
    expect(clock.pendingTimers).toBe(0)
  })

  it('the broker closing the connection is CONNECTION_LOST with the close code', () => {
    clock = new ManualClock()
    const a = openAttempt()
    a.ws.serverClose(1001, 'going away')
    expect(a.closes).toHaveLength(1)
    expect(a.closes[0]?.message).toBe('the WebSocket connection to the broker closed (code 1001: going away)')
    expect(clock.pendingTimers).toBe(0)
  })

  it('garbage, a text message, a second CONNACK, a QoS 1 PUBLISH or an oversized packet close with CONNECTION_LOST naming what was wrong', () => {
    const cases: Array<[(ws: ScriptedWebSocket) => void, RegExp]> = [
      [(ws) => { ws.serverSend(Uint8Array.of(0xf0, 0)) }, /not MQTT: MQTT type 15 \(reserved\)/],
      [(ws) => { ws.serverSend(Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x7f)) }, /remaining length longer than 4 bytes/],
      [(ws) => { ws.serverSend('hello') }, /text WebSocket message/],
      [(ws) => { ws.serverPacket({ cmd: 'connack', returnCode: 0, sessionPresent: false }) }, /unexpected MQTT CONNACK on an open connection/],
      [(ws) => { ws.serverPacket({ cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 1, messageId: 3, dup: false, retain: false }) }, /QoS 1 PUBLISH on t/],
      [(ws) => { ws.serverSend(publish('t', new Uint8Array(2000)).subarray(0, 4)) }, /MQTT PUBLISH of 2006 bytes is over the limit of 1024 \(maxPacketBytes\)/]
    ]
    for (const [play, message] of cases) {
      clock = new ManualClock()
      const a = openAttempt({}, { maxPacketBytes: 1024 })
      play(a.ws)
      expect(a.closes, message.source).toHaveLength(1)
      expect(a.closes[0]?.code).toBe(ErrorCode.CONNECTION_LOST)
      expect(a.closes[0]?.message).toMatch(message)
      expect(a.frames).toEqual([])
      expect(a.ws.closedWith).toHaveLength(1)
    }
  })

  it('a send buffer over maxBufferedBytes closes the connection instead of buffering more', () => {
    clock = new ManualClock()
    const a = openAttempt({}, { maxBufferedBytes: 4096 })
    a.ws.bufferedAmount = 4000
    a.conn.send('herald/c/ops/dash/q', new Uint8Array(50))
    expect(a.closes).toEqual([])
    a.ws.bufferedAmount = 4090
    a.conn.send('herald/c/ops/dash/q', new Uint8Array(50))
    expect(a.closes).toHaveLength(1)
    expect(a.closes[0]?.message).toMatch(/4090 bytes are waiting to be sent on the WebSocket, over the limit of 4096 \(maxBufferedBytes\)/)
    expect(a.ws.commands().filter((c) => c === 'publish')).toHaveLength(1)
  })

  it('keepalive: a PINGREQ after a keepalive interval of silence; answered, the connection stays', () => {
    clock = new ManualClock()
    const a = openAttempt({ keepaliveSec: 10 }, { pingTimeoutMs: 2000 })
    clock.advance(9999)
    expect(a.ws.commands()).toEqual(['connect', 'subscribe'])
    clock.advance(1)
    expect(a.ws.commands()).toEqual(['connect', 'subscribe', 'pingreq'])
    clock.advance(1500)
    a.ws.serverPacket({ cmd: 'pingresp' })
    for (let i = 0; i < 10; i++) {
      clock.advance(10_000)
      a.ws.serverPacket({ cmd: 'pingresp' })
    }
    expect(a.closes).toEqual([])
    expect(a.ws.commands().filter((c) => c === 'pingreq').length).toBeGreaterThanOrEqual(10)
  })

  it('keepalive: no answer within pingTimeoutMs of a PINGREQ and the connection is dead (CONNECTION_LOST)', () => {
    clock = new ManualClock()
    const a = openAttempt({ keepaliveSec: 10 }, { pingTimeoutMs: 2000 })
    clock.advance(10_000)
    expect(a.ws.commands().at(-1)).toBe('pingreq')
    clock.advance(1999)
    expect(a.closes).toEqual([])
    clock.advance(1)
    expect(a.closes).toHaveLength(1)
    expect(a.closes[0]?.code).toBe(ErrorCode.CONNECTION_LOST)
    expect(a.closes[0]?.message).toMatch(/no answer from the broker within 2000 ms of a PINGREQ/)
    expect(a.ws.closedWith).toHaveLength(1)
    expect(clock.pendingTimers).toBe(0)
  })

  it('keepalive: a broker that keeps sending still gets a PINGREQ from a client that sends nothing (its own keepalive)', () => {
    clock = new ManualClock()
    const a = openAttempt({ keepaliveSec: 10 }, { pingTimeoutMs: 2000 })
    for (let i = 0; i < 25; i++) {
      clock.advance(1000)
      a.ws.serverSend(publish('herald/c/ops/dash/m', Uint8Array.of(i)))
    }
    expect(a.ws.commands().filter((c) => c === 'pingreq')).toHaveLength(2)
    expect(a.closes).toEqual([])
    expect(a.frames).toHaveLength(25)
  })

  it('keepalive 0: no PINGREQ, no timers', () => {
    clock = new ManualClock()
    const a = openAttempt({ keepaliveSec: 0 })
    expect(clock.pendingTimers).toBe(0)
    clock.advance(3_600_000)
    expect(a.ws.commands()).toEqual(['connect', 'subscribe'])
  })
})

/**
 * ServiceEndpoint alone: a MemoryServicePersistence, a MemoryTransport (the test plays the broker)
 * and a ManualClock. The window, frame splitting, the ack timeout and the resend after it, reconnect
 * backoff on the clock, refused credentials, the seq probe [SVC-SEQ-1], raising offline, expiry
 * before upload, closing in every state. No sockets, no real time.
 */
import { describe, expect, it } from 'vitest'
import { AuthError, ClosedError, ErrorCode, ManualClock, PayloadKind, backoffDelay, encodeAck, frameBytesOf, serviceAckTopic, serviceUpTopic, type HeraldError, type Rejection, type UpFrame } from '@herald/protocol'
import { MemoryTransport, type MemoryConnection } from '@herald/protocol/testing'
import { MemoryServicePersistence } from './persistence/memory-service-persistence.js'
import { ServiceEndpoint, type ServiceEndpointOptions } from './service-endpoint.js'

const INSTANCE = 'inst-1'
const LIFETIME_MS = 5_000
const RECONNECT = { initialMs: 400, maxMs: 3_200 }
const RANDOM = 0.5
const ACK_TIMEOUT_MS = 2_000
/** How often the endpoint looks for a stalled acknowledgement: every second, or ackTimeoutMs if shorter. */
const ACK_CHECK_MS = Math.min(1_000, ACK_TIMEOUT_MS)

/** Runs the promise jobs that are due (persistence calls, the probe's answer) without moving time. */
async function flush (): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve()
}

interface Harness {
  ep: ServiceEndpoint
  clock: ManualClock
  transport: MemoryTransport
  persistence: MemoryServicePersistence
  errors: HeraldError[]
  /** Accepts the latest dial, checks the probe and answers it with `brokerHolds`. */
  connect: (brokerHolds?: number) => Promise<MemoryConnection>
  /** Acknowledges up to `acked` on the current connection. */
  ack: (acked: number, rejections?: Rejection[]) => Promise<void>
  /** The events of the UP frames (not the probe) sent on a connection, by seq. */
  seqsOn: (conn: MemoryConnection) => number[]
  /** The UP frames with events sent on a connection. */
  framesOn: (conn: MemoryConnection) => UpFrame[]
}

function makeEndpoint (extra: Partial<ServiceEndpointOptions> = {}, persistence = new MemoryServicePersistence({ instance: INSTANCE })): Harness {
  const clock = new ManualClock()
  const transport = new MemoryTransport()
  const ep = new ServiceEndpoint({
    url: 'mqtt://broker.invalid:1883',
    serviceId: 'svc',
    secret: 'svc-secret-1',
    events: [{ name: 'log', category: 'queueing' }, { name: 'short', category: 'queueing', lifetimeMs: LIFETIME_MS }],
    persistence,
    transport,
    clock,
    random: () => RANDOM,
    reconnectInitialMs: RECONNECT.initialMs,
    reconnectMaxMs: RECONNECT.maxMs,
    ackTimeoutMs: ACK_TIMEOUT_MS,
    ...extra
  })
  const errors: HeraldError[] = []
  ep.on('error', (e) => { errors.push(e) })
  const framesOn = (conn: MemoryConnection): UpFrame[] => conn.ups().filter((f) => f.events.length > 0)
  return {
    ep, clock, transport, persistence, errors, framesOn,
    seqsOn: (conn) => framesOn(conn).flatMap((f) => f.events.map((e) => e.seq)),
    connect: async (brokerHolds = 0) => {
      const conn = transport.last
      conn.open()
      const probe = conn.ups()[0]
      expect(probe).toEqual({ instance: INSTANCE, after: 0, events: [] })
      expect(conn.sent[0]?.topic).toBe(serviceUpTopic('svc'))
      conn.inject(encodeAck({ instance: INSTANCE, acked: brokerHolds, rejections: [], error: null }))
      await flush()
      return conn
    },
    ack: async (acked, rejections = []) => {
      transport.last.inject(encodeAck({ instance: INSTANCE, acked, rejections, error: null }))
      await flush()
    }
  }
}

async function raiseLogs (ep: ServiceEndpoint, n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push((await ep.raise('log', { i })).seq)
  return out
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Advances to just before `delay`, checks nothing was dialed, then to it: one new dial. */
function expectDialAfter (h: Harness, delay: number): void {
  const dials = h.transport.dials.length
  h.clock.advance(delay - 1)
  expect(h.transport.dials.length).toBe(dials)
  h.clock.advance(1)
  expect(h.transport.dials.length).toBe(dials + 1)
}

describe('ServiceEndpoint (memory transport, manual clock)', () => {
  it('dials with its identity: client id s/<id>, user name, secret, its ack topic', () => {
    const h = makeEndpoint()
    h.ep.start()
    const o = h.transport.last.options
    expect([o.clientId, o.username, o.password, o.replyTopic]).toEqual(['s/svc', 'svc', 'svc-secret-1', serviceAckTopic('svc')])
  })

  it('raises offline, then uploads after connecting, in seq order', async () => {
    const h = makeEndpoint()
    const seqs = await raiseLogs(h.ep, 3)
    expect(h.ep.status.backlog).toBe(3)
    h.ep.start()
    expect(h.ep.status.state).toBe('connecting')
    const conn = await h.connect()
    expect(h.ep.status.state).toBe('online')
    expect(h.seqsOn(conn)).toEqual(seqs)
    expect(h.framesOn(conn)[0]?.after).toBe(0)
    await h.ack(seqs[seqs.length - 1] as number)
    expect(h.ep.status.backlog).toBe(0)
    expect(h.ep.counters.acknowledged).toBe(3)
    await h.ep.close()
  })

  describe('[SVC-SEQ-1] the seq probe', () => {
    it('sends nothing but the probe until it is answered, and probes once per process', async () => {
      const h = makeEndpoint()
      await raiseLogs(h.ep, 2)
      h.ep.start()
      const conn = h.transport.last
      conn.open()
      await flush()
      expect(conn.ups()).toEqual([{ instance: INSTANCE, after: 0, events: [] }])
      conn.inject(encodeAck({ instance: INSTANCE, acked: 0, rejections: [], error: null }))
      await flush()
      expect(h.seqsOn(conn)).toEqual([1, 2])
      conn.drop()
      await flush()
      h.clock.advance(backoffDelay(0, RECONNECT, () => RANDOM))
      const again = h.transport.last
      again.open()
      await flush()
      // no second probe: the unacknowledged events at once, after the last acknowledged seq
      expect(again.ups().map((f) => [f.after, f.events.map((e) => e.seq)])).toEqual([[0, [1, 2]]])
      await h.ep.close()
    })

    it('takes what the broker already holds as acknowledged', async () => {
      // an earlier process on this persistence raised 1..3; the broker has 1..2
      const persistence = new MemoryServicePersistence({ instance: INSTANCE })
      await persistence.append([1, 2, 3].map((seq) => ({ seq, name: 'log', category: 'queueing' as const, raisedAt: 0, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: new Uint8Array([0x31]) })))
      const h = makeEndpoint({}, persistence)
      h.ep.start()
      const conn = await h.connect(2)
      expect(h.ep.acked).toBe(2)
      expect(h.framesOn(conn).map((f) => [f.after, f.events.map((e) => e.seq)])).toEqual([[2, [3]]])
      expect(h.ep.status.backlog).toBe(1)
      await h.ep.close()
    })

    it('gives this process\'s events new seqs above the broker\'s when the broker holds more than the persistence knows', async () => {
      const h = makeEndpoint()
      const raised = await raiseLogs(h.ep, 3)
      h.ep.start()
      const brokerHolds = raised.length + 2
      const conn = await h.connect(brokerHolds)
      // same order, above the broker's highest seq, after it
      expect(h.framesOn(conn).map((f) => f.after)).toEqual([brokerHolds])
      expect(h.seqsOn(conn)).toEqual(raised.map((_, i) => brokerHolds + 1 + i))
      // later raises come after them
      const next = await h.ep.raise('log', 'later')
      expect(next.seq).toBe(brokerHolds + raised.length + 1)
      await h.ep.close()
    })

    it('drops the connection when the probe goes unanswered for ackTimeoutMs, and probes again', async () => {
      const h = makeEndpoint()
      await raiseLogs(h.ep, 1)
      h.ep.start()
      const conn = h.transport.last
      conn.open()
      h.clock.advance(ACK_TIMEOUT_MS)
      await flush()
      expect(conn.state).toBe('open')
      h.clock.advance(ACK_CHECK_MS)
      await flush()
      expect(conn.state).toBe('closed')
      expect(conn.endedByEndpoint).toBe(true)
      expect(h.ep.status.lastError?.code).toBe(ErrorCode.TIMEOUT)
      h.clock.advance(backoffDelay(0, RECONNECT, () => RANDOM))
      const again = await h.connect()
      expect(h.seqsOn(again)).toEqual([1])
      expect(h.seqsOn(conn)).toEqual([])
      await h.ep.close()
    })
  })

  it('keeps at most `window` events in flight: the next frame only after an ACK, each event once, in order', async () => {
    const window = 3
    const h = makeEndpoint({ window, maxEventsPerFrame: 2 })
    const seqs = await raiseLogs(h.ep, 8)
    h.ep.start()
    const conn = await h.connect()
    expect(h.seqsOn(conn)).toEqual(seqs.slice(0, window))
    expect(h.framesOn(conn).map((f) => f.events.length)).toEqual([2, 1])
    await raiseLogs(h.ep, 1)
    expect(h.seqsOn(conn)).toEqual(seqs.slice(0, window))
    await h.ack(seqs[0] as number)
    expect(h.seqsOn(conn)).toEqual(seqs.slice(0, window + 1))
    await h.ack(seqs[window] as number)
    expect(h.seqsOn(conn)).toEqual(range(1, 2 * window + 1))
    await h.ack(2 * window + 1)
    expect(h.seqsOn(conn)).toEqual(range(1, 9))
    // [SVC-ORDER-1] each frame continues after the one before it
    const frames = h.framesOn(conn)
    for (let i = 1; i < frames.length; i++) {
      const prev = frames[i - 1] as UpFrame
      expect(frames[i]?.after).toBe(prev.events[prev.events.length - 1]?.seq)
    }
    await h.ep.close()
  })

  it('splits UP frames at maxEventsPerFrame and at maxFrameBytes', async () => {
    const payload = new Uint8Array(420)
    const perEvent = frameBytesOf({ seq: 1, name: 'log', category: 'queueing', raisedAt: 0, isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload })
    const maxFrameBytes = 2 * perEvent + 10
    expect(maxFrameBytes).toBeGreaterThanOrEqual(1024) // the option's lower bound
    const h = makeEndpoint({ maxFrameBytes, maxEventsPerFrame: 100 })
    for (let i = 0; i < 5; i++) await h.ep.raise('log', payload)
    h.ep.start()
    const conn = await h.connect()
    expect(h.framesOn(conn).map((f) => f.events.map((e) => e.seq))).toEqual([[1, 2], [3, 4], [5]])

    const c = makeEndpoint({ maxEventsPerFrame: 3 })
    await raiseLogs(c.ep, 7)
    c.ep.start()
    const cc = await c.connect()
    expect(c.framesOn(cc).map((f) => f.events.length)).toEqual([3, 3, 1])
    await h.ep.close()
    await c.ep.close()
  })

  it('drops the link after ackTimeoutMs without an ACK and resends everything unacknowledged after the reconnect, once each, in order', async () => {
    const h = makeEndpoint({ window: 10, maxEventsPerFrame: 2 })
    const seqs = await raiseLogs(h.ep, 6)
    h.ep.start()
    const conn = await h.connect()
    expect(h.seqsOn(conn)).toEqual(seqs)
    // progress keeps it alive: an ACK before the timeout restarts the count
    h.clock.advance(ACK_TIMEOUT_MS - ACK_CHECK_MS)
    await h.ack(seqs[1] as number)
    h.clock.advance(ACK_TIMEOUT_MS)
    await flush()
    expect(conn.state).toBe('open')
    // then silence
    h.clock.advance(ACK_CHECK_MS)
    await flush()
    expect(conn.state).toBe('closed')
    expect(conn.endedByEndpoint).toBe(true)
    expect(h.ep.status.state).toBe('offline')
    expect(h.ep.status.lastError?.code).toBe(ErrorCode.TIMEOUT)
    expectDialAfter(h, backoffDelay(0, RECONNECT, () => RANDOM))
    const again = h.transport.last
    again.open()
    await flush()
    expect(again.ups().map((f) => f.after)[0]).toBe(seqs[1])
    expect(h.seqsOn(again)).toEqual(seqs.slice(2))
    await h.ack(seqs[seqs.length - 1] as number)
    expect(h.ep.status.backlog).toBe(0)
    // nothing more is sent once everything is acknowledged
    h.clock.advance(ACK_TIMEOUT_MS * 3)
    await flush()
    expect(again.state).toBe('open')
    expect(h.seqsOn(again)).toEqual(seqs.slice(2))
    await h.ep.close()
  })

  it('reconnects with backoff on the clock: delays double up to reconnectMaxMs, and start over after being online', async () => {
    const h = makeEndpoint()
    h.ep.start()
    const attempts = 5
    for (let n = 0; n < attempts; n++) {
      h.transport.last.refuse(ErrorCode.CONNECTION_LOST)
      expectDialAfter(h, backoffDelay(n, RECONNECT, () => RANDOM))
    }
    // the cap is reached within these attempts
    expect(backoffDelay(attempts - 1, RECONNECT, () => RANDOM)).toBe(backoffDelay(attempts + 5, RECONNECT, () => RANDOM))
    await h.connect()
    h.transport.last.drop()
    await flush()
    expectDialAfter(h, backoffDelay(0, RECONNECT, () => RANDOM))
    await h.ep.close()
  })

  it('reports refused credentials as a typed AuthError once per run of refusals, and keeps the events', async () => {
    const h = makeEndpoint()
    await raiseLogs(h.ep, 2)
    h.ep.start()
    const refuse = async (code: typeof ErrorCode.BAD_CREDENTIALS | typeof ErrorCode.NOT_AUTHORIZED, n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        h.transport.last.refuse(code)
        await flush()
        h.clock.advance(h.clock.nextTimerInMs ?? 0)
        while (h.transport.last.state === 'closed') h.clock.advance(h.clock.nextTimerInMs ?? 0)
      }
    }
    await refuse(ErrorCode.BAD_CREDENTIALS, 3)
    expect(h.errors.map((e) => [e instanceof AuthError, e.code])).toEqual([[true, ErrorCode.BAD_CREDENTIALS]])
    expect(h.errors[0]?.message).toContain('"svc"')
    expect(h.ep.status.lastError?.code).toBe(ErrorCode.BAD_CREDENTIALS)
    await refuse(ErrorCode.NOT_AUTHORIZED, 2)
    expect(h.errors.map((e) => e.code)).toEqual([ErrorCode.BAD_CREDENTIALS, ErrorCode.NOT_AUTHORIZED])
    // online in between: the next refusal is reported again
    const conn = await h.connect()
    expect(h.seqsOn(conn)).toEqual([1, 2])
    conn.drop()
    await flush()
    h.clock.advance(h.clock.nextTimerInMs ?? 0)
    while (h.transport.last.state === 'closed') h.clock.advance(h.clock.nextTimerInMs ?? 0)
    await refuse(ErrorCode.NOT_AUTHORIZED, 2)
    expect(h.errors.map((e) => e.code)).toEqual([ErrorCode.BAD_CREDENTIALS, ErrorCode.NOT_AUTHORIZED, ErrorCode.NOT_AUTHORIZED])
    expect(h.errors.every((e) => e instanceof AuthError)).toBe(true)
    // nothing was acknowledged: the events are all still held
    expect(h.ep.status.backlog).toBe(2)
    await h.ep.close()
  })

  it('never uploads an event whose lifetime ran out before the upload [SVC-EXPIRE-1]', async () => {
    const h = makeEndpoint()
    const expired: number[] = []
    h.ep.on('expired', (info) => { expired.push(...info.events.map((e) => e.seq)) })
    const old = await h.ep.raise('short', 'old')
    const kept = await h.ep.raise('log', 'kept')
    h.clock.advance(LIFETIME_MS)
    const fresh = await h.ep.raise('short', 'fresh')
    h.ep.start()
    const conn = await h.connect()
    expect(h.seqsOn(conn)).toEqual([kept.seq, fresh.seq])
    expect(expired).toEqual([old.seq])
    expect(h.ep.counters.expired).toBe(1)
    await h.ep.close()
  })

  it('reports rejected events and counts them as handled [SVC-REJECT-1]', async () => {
    const h = makeEndpoint()
    const seqs = await raiseLogs(h.ep, 3)
    const rejected: Array<[number, string | undefined, string]> = []
    h.ep.on('rejected', (r) => { rejected.push([r.seq, r.name, r.error.code]) })
    h.ep.start()
    await h.connect()
    await h.ack(seqs[2] as number, [{ seq: seqs[1] as number, code: ErrorCode.PAYLOAD_TOO_LARGE, message: 'too large' }])
    expect(rejected).toEqual([[seqs[1], 'log', ErrorCode.PAYLOAD_TOO_LARGE]])
    expect(h.ep.counters).toMatchObject({ acknowledged: 2, rejected: 1 })
    expect(h.ep.status.backlog).toBe(0)
    await h.ep.close()
  })

  it('an OUT_OF_ORDER answer drops the connection and resends from what the broker holds [SVC-ORDER-1]', async () => {
    const h = makeEndpoint()
    const seqs = await raiseLogs(h.ep, 4)
    h.ep.start()
    const conn = await h.connect()
    conn.inject(encodeAck({ instance: INSTANCE, acked: seqs[0] as number, rejections: [], error: { code: ErrorCode.OUT_OF_ORDER, message: 'gap' } }))
    await flush()
    expect(conn.state).toBe('closed')
    expect(h.errors.map((e) => e.code)).toEqual([ErrorCode.OUT_OF_ORDER])
    h.clock.advance(backoffDelay(0, RECONNECT, () => RANDOM))
    const again = h.transport.last
    again.open()
    await flush()
    expect(h.framesOn(again)[0]?.after).toBe(seqs[0])
    expect(h.seqsOn(again)).toEqual(seqs.slice(1))
    await h.ep.close()
  })

  describe('close()', () => {
    async function expectClosed (h: Harness): Promise<void> {
      expect(h.clock.pendingTimers).toBe(0)
      expect(h.transport.live).toHaveLength(0)
      const dials = h.transport.dials.length
      h.clock.advance(RECONNECT.maxMs * 10)
      await flush()
      expect(h.transport.dials.length).toBe(dials)
      expect(h.ep.status.state).toBe('closed')
      await expect(h.ep.raise('log', 1)).rejects.toBeInstanceOf(ClosedError)
      await expect(h.ep.raiseBatch([{ name: 'log', payload: 1 }])).rejects.toBeInstanceOf(ClosedError)
      expect(() => h.ep.start()).toThrow(ClosedError)
      await h.ep.close() // twice is fine
    }

    it('never started', async () => {
      const h = makeEndpoint()
      await raiseLogs(h.ep, 1)
      await h.ep.close()
      expect(h.transport.dials).toHaveLength(0)
      await expectClosed(h)
    })

    it('while connecting', async () => {
      const h = makeEndpoint()
      h.ep.start()
      await h.ep.close()
      expect(h.transport.last.endedByEndpoint).toBe(true)
      await expectClosed(h)
    })

    it('while waiting for the probe\'s answer', async () => {
      const h = makeEndpoint()
      h.ep.start()
      h.transport.last.open()
      await h.ep.close()
      await expectClosed(h)
    })

    it('online with events in flight: whenAcked rejects with ClosedError', async () => {
      const h = makeEndpoint()
      const seqs = await raiseLogs(h.ep, 3)
      h.ep.start()
      const conn = await h.connect()
      expect(h.seqsOn(conn)).toEqual(seqs)
      const waiting = h.ep.whenAcked(seqs[2] as number)
      await h.ep.close()
      await expect(waiting).rejects.toBeInstanceOf(ClosedError)
      expect(conn.endedByEndpoint).toBe(true)
      await expectClosed(h)
    })

    it('offline, waiting for the retry timer', async () => {
      const h = makeEndpoint()
      h.ep.start()
      h.transport.last.refuse(ErrorCode.CONNECTION_LOST)
      await flush()
      expect(h.ep.status.state).toBe('offline')
      expect(h.clock.pendingTimers).toBeGreaterThan(0)
      await h.ep.close()
      await expectClosed(h)
    })
  })
})

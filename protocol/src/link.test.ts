/**
 * Link over a memory transport with a manual clock ([SVC-RECONNECT-1]): backoff with full jitter
 * from the injected random, the attempt counter, its events, drop() and close() in every state.
 * No sockets, no real time.
 */
import { describe, expect, it } from 'vitest'
import { backoffDelay } from './backoff.js'
import { ManualClock } from './clock.js'
import { AuthError, ErrorCode, HeraldError } from './errors.js'
import { Link, type LinkOptions } from './link.js'
import { MemoryTransport } from './testing/memory-transport.js'

const reconnect = { initialMs: 100, maxMs: 1_000 }

/** Lets the promise jobs that are due run (the memory transport reports a close after end() one microtask later). */
async function flush (): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}

/** A random source that returns `values` in turn (and records how many were taken). */
function scripted (values: readonly number[]): { random: () => number, taken: () => number } {
  let i = 0
  return {
    random: () => values[i++ % values.length] as number,
    taken: () => i
  }
}

interface Harness {
  link: Link
  clock: ManualClock
  transport: MemoryTransport
  log: string[]
  offlineErrors: Array<HeraldError | null>
  frames: Uint8Array[]
}

function makeLink (extra: Partial<LinkOptions> = {}, transport = new MemoryTransport()): Harness {
  const clock = new ManualClock()
  const link = new Link({
    transport,
    clock,
    reconnect,
    url: 'mqtt://memory',
    clientId: 's/svc',
    username: 'svc',
    password: 'pw',
    replyTopic: 'herald/ack/svc',
    connectTimeoutMs: 10_000,
    keepaliveSec: 30,
    ...extra
  })
  const log: string[] = []
  const offlineErrors: Array<HeraldError | null> = []
  const frames: Uint8Array[] = []
  link.on('connecting', (attempt) => { log.push(`connecting ${attempt}`) })
  link.on('online', () => { log.push('online') })
  link.on('offline', (err) => { log.push(`offline ${err?.code ?? 'null'}`); offlineErrors.push(err) })
  link.on('frame', (p) => { frames.push(p) })
  return { link, clock, transport, log, offlineErrors, frames }
}

/** Advances to just before the retry timer, checks that nothing was dialed, then to it. */
function advanceToRetry (h: Harness, expectedDelay: number): void {
  expect(h.clock.nextTimerInMs).toBe(expectedDelay)
  const dials = h.transport.dials.length
  h.clock.advance(expectedDelay - 1)
  expect(h.transport.dials.length).toBe(dials)
  h.clock.advance(1)
  expect(h.transport.dials.length).toBe(dials + 1)
}

describe('Link', () => {
  it('dials with the endpoint identity and reply topic', () => {
    const h = makeLink()
    h.link.start()
    expect(h.transport.dials).toHaveLength(1)
    const o = h.transport.last.options
    expect([o.clientId, o.username, o.password, o.replyTopic, o.url]).toEqual(['s/svc', 'svc', 'pw', 'herald/ack/svc', 'mqtt://memory'])
    h.link.start() // a second start while dialing dials nothing more
    expect(h.transport.dials).toHaveLength(1)
  })

  it('waits backoffDelay(attempt) with the injected random between failed attempts: full jitter in [base/2, base], doubling, capped at maxMs', () => {
    // 0 and just under 1 are the ends of the jitter range; the others in between
    const values = [0, 0.999_999, 0.5, 0.25, 0, 0.999_999, 0.75]
    const r = scripted(values)
    const h = makeLink({ random: r.random })
    h.link.start()
    const delays: number[] = []
    for (let attempt = 0; attempt < values.length; attempt++) {
      h.transport.last.refuse(ErrorCode.CONNECTION_LOST)
      const base = Math.min(reconnect.maxMs, reconnect.initialMs * 2 ** attempt)
      const expected = Math.round(base / 2 + (values[attempt] as number) * base / 2)
      expect(expected).toBe(backoffDelay(attempt, reconnect, () => values[attempt] as number))
      expect(expected).toBeGreaterThanOrEqual(base / 2)
      expect(expected).toBeLessThanOrEqual(base)
      advanceToRetry(h, expected)
      delays.push(expected)
    }
    expect(r.taken()).toBe(values.length)
    // the base doubles until the cap: the lowest delays (random 0) of attempts 0 and 4, the highest of 1 and 5
    expect(delays[0]).toBe(reconnect.initialMs / 2)
    expect(delays[4]).toBe(reconnect.maxMs / 2)
    expect(delays[1]).toBe(reconnect.initialMs * 2)
    expect(delays[5]).toBe(reconnect.maxMs)
    expect(h.log.filter((l) => l.startsWith('connecting'))).toEqual(Array.from({ length: values.length + 1 }, (_, i) => `connecting ${i}`))
  })

  it('resets the attempt counter once online: the next outage starts again at the first delay', () => {
    const h = makeLink({ random: () => 0 })
    h.link.start()
    for (let attempt = 0; attempt < 3; attempt++) {
      h.transport.last.refuse(ErrorCode.CONNECTION_LOST)
      advanceToRetry(h, backoffDelay(attempt, reconnect, () => 0))
    }
    h.transport.last.open()
    expect(h.link.online).toBe(true)
    h.transport.last.drop()
    expect(h.link.online).toBe(false)
    advanceToRetry(h, backoffDelay(0, reconnect, () => 0))
    expect(h.log).toEqual([
      'connecting 0', 'offline CONNECTION_LOST', 'connecting 1', 'offline CONNECTION_LOST', 'connecting 2', 'offline CONNECTION_LOST', 'connecting 3',
      // the first reconnect after being online waits the first delay, and counts the lost connection as its failure
      'online', 'offline CONNECTION_LOST', 'connecting 1'
    ])
  })

  it('[CLUSTER-URL-1] with moreUrls, each attempt after a failure or a lost connection dials the next broker, round robin', () => {
    const h = makeLink({ random: () => 0, moreUrls: ['mqtt://b', 'mqtt://c'] })
    h.link.start()
    h.transport.last.refuse(ErrorCode.CONNECTION_LOST)
    advanceToRetry(h, backoffDelay(0, reconnect, () => 0))
    h.transport.last.open()
    h.transport.last.drop()
    advanceToRetry(h, backoffDelay(0, reconnect, () => 0))
    h.transport.last.refuse(ErrorCode.CONNECTION_LOST)
    advanceToRetry(h, backoffDelay(1, reconnect, () => 0))
    expect(h.transport.dials.map((d) => d.options.url)).toEqual(['mqtt://memory', 'mqtt://b', 'mqtt://c', 'mqtt://memory'])
  })

  it('reports a refusal as offline with the typed AuthError, and keeps retrying', () => {
    const h = makeLink({ random: () => 0.5 })
    h.link.start()
    h.transport.last.refuse(ErrorCode.BAD_CREDENTIALS)
    h.clock.advance(backoffDelay(0, reconnect, () => 0.5))
    h.transport.last.refuse(ErrorCode.NOT_AUTHORIZED)
    expect(h.offlineErrors.map((e) => [e instanceof AuthError, e?.code])).toEqual([[true, ErrorCode.BAD_CREDENTIALS], [true, ErrorCode.NOT_AUTHORIZED]])
    expect(h.clock.pendingTimers).toBe(1)
    expect(h.transport.dials).toHaveLength(2)
  })

  it('sends only while online, and passes on frames of the current connection only', async () => {
    const h = makeLink({ random: () => 0 })
    h.link.start()
    const first = h.transport.last
    expect(h.link.send('t', new Uint8Array([9]))).toBe(false)
    first.open()
    expect(h.link.send('t', new Uint8Array([9]))).toBe(true)
    expect(first.sent.map((f) => f.topic)).toEqual(['t'])
    first.inject(new Uint8Array([1]))
    expect(h.frames.map((f) => f[0])).toEqual([1])
    h.link.drop(new HeraldError(ErrorCode.TIMEOUT, 'no ack'))
    await flush()
    expect(h.link.send('t', new Uint8Array([9]))).toBe(false)
    expect(first.sendsWhileNotOpen).toBe(0)
    expect(h.frames).toHaveLength(1)
  })

  it('drop() ends the connection, reports offline with the reason, and reconnects after the backoff', async () => {
    const h = makeLink({ random: () => 0.25 })
    h.link.start()
    h.transport.last.open()
    const reason = new HeraldError(ErrorCode.TIMEOUT, 'no acknowledgement')
    h.link.drop(reason)
    await flush()
    expect(h.transport.dials[0]?.endedByEndpoint).toBe(true)
    expect(h.offlineErrors).toEqual([reason])
    advanceToRetry(h, backoffDelay(0, reconnect, () => 0.25))
    h.transport.last.open()
    expect(h.log).toEqual(['connecting 0', 'online', 'offline TIMEOUT', 'connecting 1', 'online'])
  })

  it('drop() while not connected does nothing', () => {
    const h = makeLink()
    h.link.drop(new HeraldError(ErrorCode.TIMEOUT, 'x'))
    expect(h.transport.dials).toHaveLength(0)
    expect(h.clock.pendingTimers).toBe(0)
  })

  describe('close()', () => {
    async function expectQuiet (h: Harness): Promise<void> {
      expect(h.clock.pendingTimers).toBe(0)
      const dials = h.transport.dials.length
      h.clock.advance(reconnect.maxMs * 10)
      h.link.start()
      await flush()
      expect(h.transport.dials.length).toBe(dials)
      expect(h.transport.live).toHaveLength(0)
      expect(h.link.online).toBe(false)
    }

    it('never started: resolves, dials nothing', async () => {
      const h = makeLink()
      await h.link.close()
      await expectQuiet(h)
      expect(h.log).toEqual([])
    })

    it('while dialing: ends the attempt, no retry', async () => {
      const h = makeLink()
      h.link.start()
      await h.link.close()
      expect(h.transport.last.endedByEndpoint).toBe(true)
      await expectQuiet(h)
      expect(h.log).toEqual(['connecting 0'])
    })

    it('while online: ends the connection, reports offline once, no retry', async () => {
      const h = makeLink()
      h.link.start()
      h.transport.last.open()
      await h.link.close()
      expect(h.transport.last.endedByEndpoint).toBe(true)
      await expectQuiet(h)
      expect(h.log).toEqual(['connecting 0', 'online', 'offline null'])
    })

    it('while waiting for a retry timer: cancels it', async () => {
      const h = makeLink()
      h.link.start()
      h.transport.last.refuse(ErrorCode.CONNECTION_LOST)
      expect(h.clock.pendingTimers).toBe(1)
      await h.link.close()
      await expectQuiet(h)
      expect(h.transport.dials).toHaveLength(1)
    })

    it('while a drop is being reported: no retry after the late close', async () => {
      const h = makeLink()
      h.link.start()
      h.transport.last.open()
      h.link.drop(new HeraldError(ErrorCode.TIMEOUT, 'x'))
      await h.link.close()
      await expectQuiet(h)
    })
  })
})

/**
 * A Transport in memory, for unit tests: the test plays the broker. Every dial is recorded as a
 * MemoryConnection with the options it was made with; the test accepts it (`open`), refuses it
 * (`refuse`: an AuthError or CONNECTION_LOST), drops it once open (`drop`), reads what the endpoint
 * sent (`sent`, `ups()`, `requests()`: topic and the frame decoded with the codec) and hands frames to
 * the endpoint (`inject`). With `autoOpen` every dial is accepted by itself. No sockets, no timers:
 * what the transport reports to the endpoint happens when the test says so, or one microtask later
 * (auto-accepting, and the close after `end()`, as a real transport reports them asynchronously).
 * Browser-safe.
 */
import { decodeRequest, decodeUp, FrameType, type Request, type UpFrame } from '../codec.js'
import { AuthError, ErrorCode, HeraldError } from '../errors.js'
import type { DialHandlers, DialOptions, Transport, TransportConnection } from '../transport.js'

/** A frame an endpoint sent: its topic, its bytes, and the frame decoded (UP or REQUEST; null for any other type). */
export interface SentFrame {
  readonly topic: string
  readonly payload: Uint8Array
  readonly up: UpFrame | null
  readonly request: Request | null
}

export interface MemoryTransportOptions {
  /** Accept every dial by itself, one microtask after it (as a broker that always says yes). Default false. */
  readonly autoOpen?: boolean
  /** Called with every frame an endpoint sends, after it is recorded: a test's automatic broker. */
  readonly onSend?: (frame: SentFrame, conn: MemoryConnection) => void
}

/** What became of one dial. */
export type MemoryConnectionState = 'dialing' | 'open' | 'closed'

/** One dial of a MemoryTransport: an attempt the test answers, then (if accepted) a connection. */
export class MemoryConnection implements TransportConnection {
  state: MemoryConnectionState = 'dialing'
  /** Why it closed: undefined while not closed, null when closed without an error (e.g. after `end()`). */
  closedWith: HeraldError | null | undefined = undefined
  /** Whether the endpoint ended it (`end()`), as opposed to the test refusing or dropping it. */
  endedByEndpoint = false
  /** Frames sent on it, in order. */
  readonly sent: SentFrame[] = []
  /** Sends attempted while it was not open (a transport drops them; an endpoint should not make them). */
  sendsWhileNotOpen = 0

  constructor (
    /** The options of the dial: clientId, username, password, replyTopic, ... */
    readonly options: DialOptions,
    private readonly handlers: DialHandlers,
    private readonly onSend: ((frame: SentFrame, conn: MemoryConnection) => void) | undefined
  ) {}

  /** The broker accepts: connected and subscribed to the reply topic. */
  open (): void {
    if (this.state !== 'dialing') throw new Error(`MemoryConnection.open: the connection is ${this.state}, not dialing`)
    this.state = 'open'
    this.handlers.open()
  }

  /** The broker refuses the attempt (CONNACK 4 or 5), or it fails (CONNECTION_LOST). */
  refuse (code: typeof ErrorCode.BAD_CREDENTIALS | typeof ErrorCode.NOT_AUTHORIZED | typeof ErrorCode.CONNECTION_LOST = ErrorCode.BAD_CREDENTIALS): void {
    if (this.state !== 'dialing') throw new Error(`MemoryConnection.refuse: the connection is ${this.state}, not dialing`)
    this.finish(code === ErrorCode.CONNECTION_LOST
      ? new HeraldError(code, 'memory transport: the connection attempt failed')
      : new AuthError(code, `memory transport: the broker refused the connection (${code})`))
  }

  /** The open connection is lost (the network, or the broker closing it). */
  drop (error: HeraldError = new HeraldError(ErrorCode.CONNECTION_LOST, 'memory transport: the connection was lost')): void {
    if (this.state !== 'open') throw new Error(`MemoryConnection.drop: the connection is ${this.state}, not open`)
    this.finish(error)
  }

  /** The broker sends a frame on the endpoint's reply topic. */
  inject (payload: Uint8Array): void {
    if (this.state !== 'open') throw new Error(`MemoryConnection.inject: the connection is ${this.state}, not open`)
    this.handlers.frame(payload)
  }

  /** The UP frames sent on it, decoded, in order. */
  ups (): UpFrame[] {
    return this.sent.flatMap((f) => f.up === null ? [] : [f.up])
  }

  /** The REQUEST frames sent on it, decoded, in order. */
  requests (): Request[] {
    return this.sent.flatMap((f) => f.request === null ? [] : [f.request])
  }

  // ------------------------------------------------ TransportConnection (the endpoint's side)

  send (topic: string, payload: Uint8Array): void {
    if (this.state !== 'open') {
      this.sendsWhileNotOpen++
      return
    }
    const type = payload[0]
    const frame: SentFrame = {
      topic,
      payload,
      up: type === FrameType.UP ? decodeUp(payload) : null,
      request: type === FrameType.REQUEST ? decodeRequest(payload) : null
    }
    this.sent.push(frame)
    this.onSend?.(frame, this)
  }

  async end (): Promise<void> {
    if (this.state === 'closed') return
    this.endedByEndpoint = true
    // as a real transport: the close is reported asynchronously, and end() resolves after it
    await Promise.resolve()
    if ((this.state as MemoryConnectionState) !== 'closed') this.finish(null)
  }

  private finish (error: HeraldError | null): void {
    this.state = 'closed'
    this.closedWith = error
    this.handlers.close(error)
  }
}

/** A Transport whose broker is the test. */
export class MemoryTransport implements Transport {
  /** Every dial, in order. */
  readonly dials: MemoryConnection[] = []

  constructor (private readonly options: MemoryTransportOptions = {}) {}

  /** The latest dial; throws if there was none. */
  get last (): MemoryConnection {
    const c = this.dials[this.dials.length - 1]
    if (c === undefined) throw new Error('MemoryTransport: nothing was dialed')
    return c
  }

  /** Every frame sent on every connection, in order. */
  get sent (): SentFrame[] {
    return this.dials.flatMap((c) => c.sent)
  }

  /** Connections not closed (dialing or open). */
  get live (): MemoryConnection[] {
    return this.dials.filter((c) => c.state !== 'closed')
  }

  dial (options: DialOptions, handlers: DialHandlers): TransportConnection {
    const conn = new MemoryConnection(options, handlers, this.options.onSend)
    this.dials.push(conn)
    if (this.options.autoOpen === true) {
      queueMicrotask(() => { if (conn.state === 'dialing') conn.open() })
    }
    return conn
  }
}

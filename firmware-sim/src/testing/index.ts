/**
 * Test helpers of the simulator, for its own tests and for gateway tests that want a minimal
 * reference of the gateway side: {@link ScriptedGateway} accepts data frames by the rules of
 * docs/device-protocol.md ([DEV-GW-1] to [DEV-GW-4], [DEV-ACK-1]) and acknowledges at once.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { comparePos, encodeFrame, formatPos, FrameDecoder, isDataFrame, type DataFrame, type DeviceFrame, type FramePos, type HelloFrame } from '@herald/device-protocol'

/** Resolves once `cond()` is true; rejects after `timeoutMs` naming `what`. Polls every 5 ms. */
export async function waitFor (cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Lets queued microtasks and I/O callbacks run (memory links deliver a microtask later). */
export async function flush (): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
}

/** A fresh temporary directory. */
export async function tempDir (prefix = 'herald-sim-'): Promise<{ path: string, remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

/**
 * The gateway side of one line, as a test script: feed it the device's bytes with {@link push};
 * it answers through `send`. Keeps a mark like a gateway ([DEV-GW-1]): frames handled exactly
 * once, in order, in {@link handled}.
 */
export class ScriptedGateway {
  readonly decoder = new FrameDecoder()
  /** Every frame decoded, as it came. */
  readonly received: DeviceFrame[] = []
  /** Data frames handled: each once, in order. */
  readonly handled: DataFrame[] = []
  hellos: HelloFrame[] = []
  mark: FramePos | null = null
  duplicates = 0
  outOfOrder = 0
  gaps = 0
  /** Acknowledge every frame handled at once (default); false: call {@link ack} yourself. */
  autoAck = true
  /** Send SYNC on data frames out of order or before a HELLO, at most once a second (default); false: never by itself. */
  autoSync = true
  /** Return true to treat a data frame as lost on the line (it is not even counted). */
  lose: (frame: DataFrame) => boolean = () => false
  syncsSent = 0
  private expect: FramePos | null = null
  private helloSeen = false
  private lastSyncAt = -Infinity

  /** `now` (ms) spaces SYNCs: at most one a second ([DEV-SESSION-1]). */
  constructor (private readonly send: (bytes: Buffer) => void, private readonly now: () => number = () => Date.now()) {}

  /** The line (re)opened: no HELLO seen on it yet ([DEV-GW-4]). */
  lineOpened (): void {
    this.helloSeen = false
    this.decoder.reset()
  }

  sync (): void {
    this.syncsSent++
    this.lastSyncAt = this.now()
    this.send(encodeFrame({ type: 'SYNC' }))
  }

  ack (pos: FramePos): void {
    this.send(encodeFrame({ type: 'ACK', boot: pos.boot, seq: pos.seq }))
  }

  push (bytes: Uint8Array): void {
    for (const frame of this.decoder.push(bytes)) {
      this.received.push(frame)
      if (frame.type === 'HELLO') this.hello(frame)
      else if (isDataFrame(frame)) this.data(frame)
    }
  }

  /** The positions handled, as `<boot>:<seq>` text. */
  get handledPositions (): string[] {
    return this.handled.map((f) => formatPos(f))
  }

  private hello (frame: HelloFrame): void {
    this.hellos.push(frame)
    this.helloSeen = true
    const oldest = frame.oldest
    if (oldest !== null) {
      // [DEV-GW-2] without a mark, or with an oldest after it, expect exactly oldest;
      // [DEV-GW-3] a smaller boot than the mark's is handled as without a mark
      if (this.mark === null || frame.boot < this.mark.boot || comparePos(oldest, this.mark) > 0) this.expect = oldest
    }
    if (this.mark !== null) this.ack(this.mark) // [DEV-ACK-1]
  }

  // [DEV-GW-1] same boot and seq + 1, or seq 1 whose prev is the mark
  private isSuccessor (frame: DataFrame): boolean {
    const m = this.mark
    if (m === null) return false
    return (frame.boot === m.boot && frame.seq === m.seq + 1) || (frame.seq === 1 && frame.fields.prev === formatPos(m))
  }

  private data (frame: DataFrame): void {
    if (this.lose(frame)) return
    if (!this.helloSeen) {
      // [DEV-GW-4] not before a HELLO; [DEV-SESSION-1] ask for one, at most once a second
      this.syncSoon()
      return
    }
    const next = this.expect !== null
      ? comparePos(frame, this.expect) === 0
      : this.mark === null || this.isSuccessor(frame)
    if (next) {
      if (this.expect !== null && this.mark !== null && !this.isSuccessor(frame)) this.gaps++
      this.handled.push(frame)
      this.mark = { boot: frame.boot, seq: frame.seq }
      this.expect = null
      if (this.autoAck) this.ack(this.mark)
    } else if (this.mark !== null && comparePos(frame, this.mark) <= 0) {
      this.duplicates++
      if (this.autoAck) this.ack(this.mark)
    } else {
      this.outOfOrder++
      this.syncSoon()
    }
  }

  private syncSoon (): void {
    if (this.autoSync && this.now() - this.lastSyncAt >= 1000) this.sync()
  }
}

/**
 * What the gateway has handled of one device's frames, and whether a new frame is the next one
 * ([DEV-GW-1]..[DEV-GW-3] in docs/device-protocol.md). Sans-I/O: the gateway feeds it HELLOs and
 * data frames and tells it what became durable.
 */
import { comparePos, type FramePos as Pos } from '@herald/device-protocol'

function samePos (a: Pos | null, b: Pos | null): boolean {
  return a === null || b === null ? a === b : a.boot === b.boot && a.seq === b.seq
}

/** The frame that follows `last` without a loss between them ([DEV-GW-1]). */
function isSuccessor (last: Pos, frame: Pos, prev: Pos | null | undefined): boolean {
  if (frame.boot === last.boot) return frame.seq === last.seq + 1
  return frame.seq === 1 && prev !== undefined && samePos(prev, last)
}

/** The verdict on a data frame. */
export type Verdict =
  /** Handle it; `gap` frames were lost before it (0 normally). */
  | { readonly kind: 'accept', readonly gap: number }
  /** Already handled: acknowledge again, drop. */
  | { readonly kind: 'duplicate' }
  /** Not the next one: drop and let the device resend. */
  | { readonly kind: 'outOfOrder' }
  /** No HELLO since the last reset: ask for one. */
  | { readonly kind: 'needHello' }

/** What a HELLO changed. */
export interface HelloOutcome {
  /** The device's boot counter went back: the mark was set aside ([DEV-GW-3]). */
  readonly reset: boolean
}

/**
 * Acceptance state of one device (by serial).
 *
 * - `durable` is the mark: the last frame whose events are durable.
 * - `last` is the last frame accepted, durable or still being committed (>= durable).
 * - `expect`, set by a HELLO, is the exact position of the next frame when the device has nothing
 *   between `last` and it ([DEV-GW-2]).
 */
export class DeviceTracker {
  #durable: Pos | null
  #last: Pos | null
  #expect: Pos | null = null
  #helloSeen = false

  constructor (mark: Pos | null) {
    this.#durable = mark
    this.#last = mark
  }

  get durable (): Pos | null { return this.#durable }
  get last (): Pos | null { return this.#last }

  /** A HELLO from the device: `boot` is its current boot, `oldest` the first frame it will send. */
  hello (boot: number, oldest: Pos | null): HelloOutcome {
    this.#helloSeen = true
    const last = this.#last
    let reset = false
    if (last !== null && boot < last.boot) {
      // [DEV-GW-3] the boot counter went back: what we know of this device no longer applies
      reset = true
      this.#last = null
    }
    if (oldest === null) {
      // a device that does not say: expect the successor of what we have (or anything, if nothing)
      this.#expect = null
      return { reset }
    }
    if (this.#last === null || comparePos(oldest, this.#last) > 0) this.#expect = oldest
    else this.#expect = null
    return { reset }
  }

  /** Judges a data frame; an accepted frame becomes `last`. `prev` is the frame's `prev` (seq 1 only). */
  judge (frame: Pos, prev: Pos | null | undefined): Verdict {
    if (!this.#helloSeen) return { kind: 'needHello' }
    const last = this.#last
    if (this.#expect !== null) {
      if (frame.boot === this.#expect.boot && frame.seq === this.#expect.seq) {
        const gap = last === null || isSuccessor(last, frame, prev) ? 0 : frame.boot === last.boot ? frame.seq - last.seq - 1 : 1
        this.#expect = null
        this.#last = { boot: frame.boot, seq: frame.seq }
        return { kind: 'accept', gap }
      }
      if (last !== null && comparePos(frame, last) <= 0) return { kind: 'duplicate' }
      return { kind: 'outOfOrder' }
    }
    if (last === null) {
      // no mark and no position from the HELLO: the first frame seen starts the stream
      this.#last = { boot: frame.boot, seq: frame.seq }
      return { kind: 'accept', gap: 0 }
    }
    if (comparePos(frame, last) <= 0) return { kind: 'duplicate' }
    if (isSuccessor(last, frame, prev)) {
      this.#last = { boot: frame.boot, seq: frame.seq }
      return { kind: 'accept', gap: 0 }
    }
    return { kind: 'outOfOrder' }
  }

  /** Frames up to `pos` are durable. */
  committed (pos: Pos): void {
    if (this.#durable === null || comparePos(pos, this.#durable) > 0) this.#durable = pos
  }

  /**
   * A commit failed: forget everything accepted after the mark and wait for a HELLO, so the device
   * resends from what is durable.
   */
  rollback (): void {
    this.#last = this.#durable
    this.#expect = null
    this.#helloSeen = false
  }

  /** The line closed: a new line needs a new HELLO ([DEV-GW-4]). Accepted frames stay accepted. */
  lineClosed (): void {
    this.#helloSeen = false
    this.#expect = null
  }
}

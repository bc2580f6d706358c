/**
 * Internal building blocks shared by the persistence backends: the append checks of [SVC-PERSIST-3]
 * and [SVC-PERSIST-4], and `EventRing`, an in-memory seq-ordered list of events with O(1) amortized
 * append and removal from the front. Not exported from the package.
 */
import { CATEGORY_CODE, ErrorCode, PayloadKind, PersistenceError, RequestError, eventSize, type RaisedEvent } from '@herald/protocol'
import type { MarkTable } from './mark-table.js'
import type { AppendOutcome, OverflowPolicy } from './service-persistence.js'

/**
 * Checks the new events of one append against `lastSeq` and the capacity; returns their total size.
 * [SVC-PERSIST-3] seqs are safe integers, greater than lastSeq and increasing, else INVALID_ARGUMENT.
 * [SVC-PERSIST-4] an event larger than the capacity, or a batch larger than the capacity, is
 * CAPACITY_EXCEEDED whatever the policy (dropping every held event would not make room).
 * A malformed event is INVALID_ARGUMENT too: it must never reach a backend, where a failed insert
 * would look like a storage failure.
 */
export function checkAppend (events: readonly RaisedEvent[], lastSeq: number, capacityBytes: number): number {
  let prev = lastSeq
  let total = 0
  for (const e of events) {
    const bad = malformed(e)
    if (bad !== null) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `append: event ${String(e?.seq)}: ${bad}`)
    if (!Number.isSafeInteger(e.seq) || e.seq <= prev) {
      throw new RequestError(ErrorCode.INVALID_ARGUMENT,
        `append: seq ${e.seq} must be an integer greater than ${prev} (lastSeq ${lastSeq}, seqs increasing)`)
    }
    prev = e.seq
    const size = eventSize(e)
    if (size > capacityBytes) {
      throw new PersistenceError(`append: event ${e.seq} of ${size} bytes is larger than the whole capacity of ${capacityBytes} bytes`,
        { code: ErrorCode.CAPACITY_EXCEEDED })
    }
    total += size
  }
  if (total > capacityBytes) {
    throw new PersistenceError(`append: ${events.length} events of ${total} bytes are more than the whole capacity of ${capacityBytes} bytes`,
      { code: ErrorCode.CAPACITY_EXCEEDED })
  }
  return total
}

const KINDS = new Set<unknown>(Object.values(PayloadKind))

/** What is wrong with an event's fields, or null. */
function malformed (e: RaisedEvent): string | null {
  if (e === null || typeof e !== 'object') return 'not an object'
  if (typeof e.name !== 'string') return 'name must be a string'
  if (typeof e.category !== 'string' || !Object.hasOwn(CATEGORY_CODE, e.category)) return `unknown category ${String(e.category)}`
  if (typeof e.raisedAt !== 'number' || !Number.isFinite(e.raisedAt)) return 'raisedAt must be a finite number'
  if (typeof e.isNull !== 'boolean') return 'isNull must be a boolean'
  if (e.recipient !== null && typeof e.recipient !== 'string') return 'recipient must be a string or null'
  if (!KINDS.has(e.payloadKind)) return `unknown payloadKind ${String(e.payloadKind)}`
  if (!(e.payload instanceof Uint8Array)) return 'payload must be a Uint8Array'
  return null
}

/** The CAPACITY_EXCEEDED error of the reject policy. */
export function capacityExceeded (heldBytes: number, newBytes: number, capacityBytes: number): PersistenceError {
  return new PersistenceError(`append: ${newBytes} new bytes do not fit: ${heldBytes} of ${capacityBytes} bytes held (policy reject)`,
    { code: ErrorCode.CAPACITY_EXCEEDED })
}

/** True if `err` is a backend failure (not a capacity or argument error). */
export function isBackendFailure (err: unknown): err is PersistenceError {
  return err instanceof PersistenceError && err.code === ErrorCode.PERSISTENCE_FAILED
}

/** Compaction thresholds: the array is rebuilt when dead slots exceed both of these. */
const COMPACT_MIN = 1024

/**
 * Events in seq order. Slots removed from the front advance a head index; slots removed in the
 * middle (supersede, remove) become holes. The array is compacted when dead slots outnumber live
 * ones, so every operation is O(1) amortized except `removeSeq` (O(log n)) and `read` (O(log n + k)).
 */
export class EventRing {
  private slots: (RaisedEvent | undefined)[] = []
  /** seqs[i] is the seq of slots[i], kept for holes too so binary search works. */
  private seqs: number[] = []
  private head = 0
  private live = 0
  private held = 0

  /** Events held. */
  get count (): number { return this.live }
  /** Their bytes by eventSize. */
  get bytes (): number { return this.held }

  /** The lowest held seq, or undefined. */
  firstSeq (): number | undefined {
    this.skipHead()
    return this.slots[this.head]?.seq
  }

  /** The highest held seq, or undefined. */
  lastSeq (): number | undefined {
    return this.slots.length > this.head ? this.slots[this.slots.length - 1]?.seq : undefined
  }

  /** Appends `e`; the caller guarantees its seq is greater than every held seq. */
  push (e: RaisedEvent): void {
    this.slots.push(e)
    this.seqs.push(e.seq)
    this.live++
    this.held += eventSize(e)
  }

  /** Removes and returns the oldest event. */
  shift (): RaisedEvent | undefined {
    this.skipHead()
    const e = this.slots[this.head]
    if (e === undefined) return undefined
    this.slots[this.head++] = undefined
    this.forget(e)
    this.trim()
    return e
  }

  /** Removes every event with seq <= upTo; returns how many. */
  removeUpTo (upTo: number): number {
    let n = 0
    while (this.head < this.slots.length && (this.seqs[this.head] ?? Infinity) <= upTo) {
      const e = this.slots[this.head]
      this.slots[this.head++] = undefined
      if (e !== undefined) { this.forget(e); n++ }
    }
    this.trim()
    return n
  }

  /** The held event with this seq, or undefined. */
  get (seq: number): RaisedEvent | undefined {
    const i = this.indexOf(seq)
    return i < 0 ? undefined : this.slots[i]
  }

  /** Removes the event with this seq; returns it, or undefined if it was not held. */
  removeSeq (seq: number): RaisedEvent | undefined {
    const i = this.indexOf(seq)
    if (i < 0) return undefined
    const e = this.slots[i]
    if (e === undefined) return undefined
    this.slots[i] = undefined
    this.forget(e)
    this.trim()
    return e
  }

  /** Up to `limit` held events with seq > after, in seq order. */
  read (after: number, limit: number): RaisedEvent[] {
    const out: RaisedEvent[] = []
    for (let i = this.lowerBound(after + 1); i < this.slots.length && out.length < limit; i++) {
      const e = this.slots[i]
      if (e !== undefined) out.push(e)
    }
    return out
  }

  /** Removes everything. */
  clear (): void {
    this.slots = []
    this.seqs = []
    this.head = 0
    this.live = 0
    this.held = 0
  }

  private forget (e: RaisedEvent): void {
    this.live--
    this.held -= eventSize(e)
  }

  private indexOf (seq: number): number {
    const i = this.lowerBound(seq)
    return i < this.slots.length && this.seqs[i] === seq ? i : -1
  }

  /** The first index >= head whose seq is >= seq. */
  private lowerBound (seq: number): number {
    let lo = this.head
    let hi = this.slots.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.seqs[mid] ?? Infinity) < seq) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  private skipHead (): void {
    while (this.head < this.slots.length && this.slots[this.head] === undefined) this.head++
  }

  /** Drops holes at both ends, and compacts when dead slots outnumber live ones. */
  private trim (): void {
    while (this.slots.length > this.head && this.slots[this.slots.length - 1] === undefined) {
      this.slots.pop()
      this.seqs.pop()
    }
    this.skipHead()
    if (this.head === this.slots.length) {
      this.slots = []
      this.seqs = []
      this.head = 0
      return
    }
    const dead = this.slots.length - this.live
    if (dead > COMPACT_MIN && dead > this.live) {
      const slots: RaisedEvent[] = []
      for (let i = this.head; i < this.slots.length; i++) {
        const e = this.slots[i]
        if (e !== undefined) slots.push(e)
      }
      this.slots = slots
      this.seqs = slots.map((e) => e.seq)
      this.head = 0
    }
  }
}

/**
 * One append into a ring that is the store of record (memory backend, or the two-level store once
 * it runs on memory only), with its marks table. Checks everything first and throws without
 * changing anything ([SVC-PERSIST-3], [SVC-PERSIST-4], [SVC-MARK-1]); then deletes the superseded
 * events, drops the oldest under dropOldest, appends, and writes the marks (`marks` is the checked
 * copy `checkMarks` returns). Returns the outcome and the new lastSeq.
 */
export function appendToRing (ring: EventRing, lastSeq: number, events: readonly RaisedEvent[], supersede: readonly number[],
  capacityBytes: number, policy: OverflowPolicy, table: MarkTable, marks: ReadonlyMap<string, string> | undefined): { outcome: AppendOutcome, lastSeq: number } {
  const newBytes = checkAppend(events, lastSeq, capacityBytes)
  if (marks !== undefined) table.check(marks)
  let freed = 0
  const gone = new Set<number>()
  for (const seq of supersede) {
    const e = gone.has(seq) ? undefined : ring.get(seq)
    if (e !== undefined) { freed += eventSize(e); gone.add(seq) }
  }
  if (policy === 'reject' && ring.bytes - freed + newBytes > capacityBytes) throw capacityExceeded(ring.bytes - freed, newBytes, capacityBytes)
  if (marks !== undefined) {
    table.stage(marks)
    table.commit()
  }
  for (const seq of gone) ring.removeSeq(seq)
  const dropped: RaisedEvent[] = []
  while (ring.bytes + newBytes > capacityBytes) {
    const e = ring.shift()
    if (e === undefined) break
    dropped.push(e)
  }
  for (const e of events) ring.push(e)
  return { outcome: { dropped }, lastSeq: events.length > 0 ? (events[events.length - 1]?.seq ?? lastSeq) : lastSeq }
}

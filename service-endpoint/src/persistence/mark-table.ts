/**
 * Source marks ([SVC-MARK-1]), the part every backend shares: the check of an append's marks
 * argument, and `MarkTable`, the marks a store holds, with those of a commit in progress staged on
 * top so that the key limit counts them before they are committed. Not exported from the package.
 */
import { ErrorCode, RequestError } from '@herald/protocol'
import { MARK_LIMITS } from './service-persistence.js'

/** A string as it may appear in an error message: quoted, cut to 40 characters. */
function shown (s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}...` : s)
}

/** In unicode mode a surrogate pair is one code point, so this matches only lone surrogates. */
const LONE_SURROGATE = /\p{Cs}/u

/** What is wrong with a key or value, or null. */
function badText (s: unknown, maxChars: number): string | null {
  if (typeof s !== 'string') return `must be a string, got ${typeof s}`
  if (s.length > maxChars) {
    // UTF-16 units can outnumber characters (code points): count the characters
    let n = 0
    for (const _ of s) if (++n > maxChars) return `is longer than ${maxChars} characters`
  }
  if (LONE_SURROGATE.test(s)) return 'is not valid Unicode (a lone surrogate has no UTF-8 form)'
  return null
}

/**
 * Checks the `marks` argument of an append against MARK_LIMITS and returns a copy of it (so that the
 * caller may change its map once the call returned), or undefined if it gives no marks. Throws
 * RequestError INVALID_ARGUMENT. Allocates nothing when `marks` is undefined.
 */
export function checkMarks (marks: ReadonlyMap<string, string> | undefined): ReadonlyMap<string, string> | undefined {
  if (marks === undefined) return undefined
  if (marks === null || typeof marks !== 'object' || typeof marks.size !== 'number' || typeof marks.forEach !== 'function') {
    throw new RequestError(ErrorCode.INVALID_ARGUMENT, 'append: marks must be a Map of strings to strings')
  }
  if (marks.size === 0) return undefined
  if (marks.size > MARK_LIMITS.perAppend) {
    throw new RequestError(ErrorCode.INVALID_ARGUMENT, `append: ${marks.size} marks are more than the limit of ${MARK_LIMITS.perAppend} per append`)
  }
  const copy = new Map<string, string>()
  marks.forEach((value, key) => {
    const badKey = badText(key, MARK_LIMITS.keyChars)
    if (badKey !== null) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `append: mark key ${typeof key === 'string' ? `${shown(key)} ` : ''}${badKey}`)
    const badValue = badText(value, MARK_LIMITS.valueChars)
    if (badValue !== null) throw new RequestError(ErrorCode.INVALID_ARGUMENT, `append: the value of mark ${shown(key)} ${badValue}`)
    copy.set(key, value)
  })
  return copy
}

/**
 * The marks a store holds. `check` and `stage` run for each append of a commit, in call order;
 * then `commit` makes the staged marks current, or `rollback` forgets them.
 */
export class MarkTable {
  #held: Map<string, string>
  #staged: Map<string, string> | null = null
  /** Staged keys that are not held. */
  #stagedNew = 0

  constructor (initial: Iterable<readonly [string, string]> = []) {
    this.#held = new Map(initial)
  }

  /** Distinct keys held. */
  get size (): number {
    return this.#held.size
  }

  /** Throws INVALID_ARGUMENT if adding `marks` to the held and staged ones would exceed MARK_LIMITS.keys. */
  check (marks: ReadonlyMap<string, string>): void {
    let added = 0
    for (const key of marks.keys()) {
      if (!this.#held.has(key) && this.#staged?.has(key) !== true) added++
    }
    const total = this.#held.size + this.#stagedNew + added
    if (added > 0 && total > MARK_LIMITS.keys) {
      throw new RequestError(ErrorCode.INVALID_ARGUMENT,
        `append: ${added} new mark keys would make ${total}, over the limit of ${MARK_LIMITS.keys} distinct keys a store holds`)
    }
  }

  /** Stages `marks` (already checked) on top of the earlier staged ones: the last writer of a key wins. */
  stage (marks: ReadonlyMap<string, string>): void {
    const staged = this.#staged ??= new Map()
    for (const [key, value] of marks) {
      if (!this.#held.has(key) && !staged.has(key)) this.#stagedNew++
      staged.set(key, value)
    }
  }

  /** Makes the staged marks current. */
  commit (): void {
    const staged = this.#staged
    if (staged === null) return
    for (const [key, value] of staged) this.#held.set(key, value)
    this.rollback()
  }

  /** Forgets the staged marks. */
  rollback (): void {
    this.#staged = null
    this.#stagedNew = 0
  }

  /** A copy of the held marks. */
  snapshot (): Map<string, string> {
    return new Map(this.#held)
  }

  /** Forgets everything. */
  clear (): void {
    this.#held.clear()
    this.rollback()
  }
}

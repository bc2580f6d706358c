/**
 * subscribe() options `batch` ([CLI-BATCH-1]), `concurrency` and `sequence` ([CLI-CONC-1]): checked
 * here, each ConfigError naming the option and what was wrong.
 */
import { ConfigError, decodePayload, type StoredEvent } from '@herald/protocol'
import type { HeraldEvent } from '../herald-event.js'

/** Most events in one batch. */
export const MAX_BATCH_EVENTS = 10_000
/** Longest wait for a batch to fill, ms. */
export const MAX_BATCH_WAIT_MS = 60_000
/** Most handlers running at once for one subscription. */
export const MAX_CONCURRENCY = 256

/** subscribe() option `batch` ([CLI-BATCH-1]). */
export interface BatchOptions {
  /** Most events handed to the handler at once, 1 to 10,000; at most the subscription's window. */
  readonly maxEvents: number
  /** How long after the first event of a batch arrived more are waited for, 0 to 60,000 ms. */
  readonly maxWaitMs: number
}

/**
 * [CLI-CONC-2] What keeps order when handlers run concurrently: events with the same sequencing key
 * are handled one at a time in position order. `'service'` (default): the raising service;
 * `'key'`: the event's replacing key (the service when it has none); `{ field }`: a top-level field
 * of a JSON object payload (the service when the payload has no such field or is not an object).
 */
export type SequencePolicy = 'service' | 'key' | { readonly field: string }

/** A batch handler: the events of one batch, in position order. Throwing means "retry this batch". */
export type BatchHandler = (events: HeraldEvent[]) => void | Promise<void>

function int (name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(`subscribe: option "${name}" must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`)
  return v
}

/** Checks `batch` against the subscription's window ([CLI-BATCH-2]). */
export function checkBatch (batch: unknown, window: number): { maxEvents: number, maxWaitMs: number } {
  if (typeof batch !== 'object' || batch === null) throw new ConfigError('subscribe: option "batch" must be an object { maxEvents, maxWaitMs }')
  const b = batch as Partial<BatchOptions>
  const maxEvents = int('batch.maxEvents', b.maxEvents, 1, MAX_BATCH_EVENTS)
  const maxWaitMs = int('batch.maxWaitMs', b.maxWaitMs, 0, MAX_BATCH_WAIT_MS)
  // the broker sends at most `window` unacknowledged events: a larger batch could never fill
  if (maxEvents > window) throw new ConfigError(`subscribe: option "batch.maxEvents" (${maxEvents}) is larger than the subscription's "window" (${window}): the broker sends at most window unacknowledged events, so such a batch never fills; raise "window" or lower "batch.maxEvents"`)
  return { maxEvents, maxWaitMs }
}

/** Checks `concurrency` ([CLI-CONC-1]). */
export function checkConcurrency (v: unknown): number {
  return v === undefined ? 1 : int('concurrency', v, 1, MAX_CONCURRENCY)
}

/** Checks `sequence` and returns the function giving an event's sequencing key ([CLI-CONC-2]). */
export function sequencer (policy: unknown): (e: StoredEvent) => string {
  if (policy === undefined || policy === 'service') return (e) => e.serviceId
  if (policy === 'key') {
    // the replacing key ([CLI-KEY-*]), when the event has one; one key of several services is one
    // sequence (the conservative choice: a device's events keep their order whichever service raised them)
    return (e) => e.key === undefined ? `s:${e.serviceId}` : `k:${e.key}`
  }
  if (typeof policy === 'object' && policy !== null && typeof (policy as { field?: unknown }).field === 'string' && (policy as { field: string }).field.length > 0 && (policy as { field: string }).field.length <= 200) {
    const field = (policy as { field: string }).field
    return (e) => {
      const p = decodePayload(e.payloadKind, e.payload)
      if (typeof p === 'object' && p !== null && !(p instanceof Uint8Array) && !Array.isArray(p)) {
        const v = (p as Record<string, unknown>)[field]
        if (v !== undefined) return `f:${typeof v === 'string' ? v : JSON.stringify(v)}`
      }
      return `s:${e.serviceId}`
    }
  }
  throw new ConfigError(`subscribe: option "sequence" must be "service", "key" or { field: "<payload field>" } (1 to 200 characters), got ${JSON.stringify(policy)}`)
}

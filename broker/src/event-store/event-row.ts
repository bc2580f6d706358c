/**
 * The `events` row both SQL stores keep (SQLite and PostgreSQL): its columns in the order they are
 * selected, the row as a driver returns it in that order, and the StoredEvent it stands for.
 */
import { CATEGORY_BY_CODE, type Category, type PayloadKind, type StoredEvent } from '@herald/protocol'
import { NO_RECIPIENT } from './event-store-rules.js'

/** Bit of `flags`: a null instance ([STORE-REPLACE-2]). */
export const FLAG_NULL = 1

/** The columns of an `events` row, in the order of EventRow. */
export const EVENT_COLUMNS = 'position, service, instance, seq, event, category, recipient, raised_at, received_at, expires_at, flags, payload_kind, payload, upload_age, rkey'

/** An `events` row selected as EVENT_COLUMNS, raw (an array). `rkey` is '' for an unkeyed event ([STORE-KEY-1]). */
export type EventRow = [
  position: number, service: string, instance: string, seq: number, event: string, category: number, recipient: string,
  raisedAt: number, receivedAt: number, expiresAt: number | null, flags: number, payloadKind: number, payload: Buffer, uploadAge: number, rkey: string
]

/** The stored event of a row; `key` is set only on a keyed one, so an unkeyed event keeps one shape. */
export function toStored (r: EventRow): StoredEvent {
  const e: StoredEvent = {
    seq: r[3],
    name: r[4],
    category: CATEGORY_BY_CODE[r[5]] as Category,
    raisedAt: r[7],
    isNull: (r[10] & FLAG_NULL) !== 0,
    recipient: r[6] === NO_RECIPIENT ? null : r[6],
    payloadKind: r[11] as PayloadKind,
    payload: r[12],
    position: r[0],
    serviceId: r[1],
    instance: r[2],
    receivedAt: r[8],
    expiresAt: r[9],
    uploadAge: r[13]
  }
  if (r[14] !== '') (e as { key?: string }).key = r[14]
  return e
}

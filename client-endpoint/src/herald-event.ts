/** The event a client handler receives ([CLI-EVENT-1]). */
import { decodePayload, eventId, type Category, type Payload, type StoredEvent } from '@herald/protocol'

export interface HeraldEvent {
  /** Unique id assigned when raised: `<persistence instance>-<seq>`. */
  readonly id: string
  readonly serviceId: string
  readonly name: string
  readonly category: Category
  /** The service's sequence number within its persistence instance. */
  readonly sequence: number
  /** The service persistence instance that raised it. */
  readonly instance: string
  /** When it was raised, ms since the epoch, by the gateway's clock. */
  readonly raisedAt: number
  /** When the broker stored it, ms since the epoch, by the broker's clock. */
  readonly receivedAt: number
  /** Its position in the broker. */
  readonly position: number
  /** A JSON value, a Uint8Array for bytes, or null for a null event. */
  readonly payload: Payload | null
  /** A replacing null event: the condition no longer holds. */
  readonly isNull: boolean
  /** The recipient key of a private event, else null. */
  readonly recipient: string | null
  /** The replacing key of a keyed replacing event ([SITE-KEY-1]); absent for unkeyed events. */
  readonly key?: string
  /**
   * Milliseconds since it was raised, when the handler is called ([EVT-AGE-1]): the time from its raise
   * to its upload by the service's clock, plus the time since the broker received it by the broker's
   * clock — no two clocks are compared, so skew does not enter. It expires when this reaches its lifetime.
   */
  readonly age: number
  /**
   * True if a handler for this very event started before and may have run (the process died before its
   * position was committed) ([CLI-REDELIVER-1]). Never true in transactional mode.
   */
  readonly redelivered: boolean
  /**
   * True while a replay runs ([CLI-REPLAY-2]): the subscription was reset to an earlier start and this
   * event is at or before the position it had handled when it was reset.
   */
  readonly replay: boolean
}

/** Builds the handler's view of a stored event. */
export function toHeraldEvent (e: StoredEvent, age: number, redelivered: boolean, replay = false): HeraldEvent {
  const event: HeraldEvent = {
    id: eventId(e.instance, e.seq),
    serviceId: e.serviceId,
    name: e.name,
    category: e.category,
    sequence: e.seq,
    instance: e.instance,
    raisedAt: e.raisedAt,
    receivedAt: e.receivedAt,
    position: e.position,
    payload: decodePayload(e.payloadKind, e.payload),
    isNull: e.isNull,
    recipient: e.recipient,
    age,
    redelivered,
    replay
  }
  // [SITE-KEY-1] only keyed events carry a key (no spread on the path of every event)
  if (e.key !== undefined) (event as { key?: string }).key = e.key
  return event
}

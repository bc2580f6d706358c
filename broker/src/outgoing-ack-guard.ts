/**
 * Keeps aedes' in-memory persistence from growing with every client id that sends a PUBACK.
 *
 * aedes hands each PUBACK to `persistence.outgoingClearMessageId`, and aedes-persistence's memory
 * store creates an entry for that client id first, even when nothing was ever stored for it, and
 * never removes it. Herald keeps nothing for a closed connection ([CONN-SESSION-1]): frames go
 * straight onto the socket (delivery/connection-writer.ts) and the plain-MQTT view tracks its own
 * QoS 1 in flight, so aedes stores no outgoing message at all. Without this guard, a plain QoS 1
 * subscriber reconnecting under a new client id each time (mosquitto_sub picks a random one) would
 * leave one entry per id behind, without bound.
 *
 * The guard notes which client ids aedes ever stored an outgoing message for, and answers a PUBACK
 * of any other id as the store would (no packet) without touching it.
 */

type Callback = (err: Error | null, packet?: unknown) => void

/** The part of aedes' persistence the guard wraps (aedes-persistence's CallBackPersistence). */
export interface OutgoingPersistence {
  outgoingEnqueue (sub: { clientId: string }, packet: unknown, cb?: Callback): unknown
  outgoingEnqueueCombi (subs: ReadonlyArray<{ clientId: string }>, packet: unknown, cb?: Callback): unknown
  outgoingUpdate (client: { id: string }, packet: unknown, cb?: Callback): unknown
  outgoingClearMessageId (client: { id: string }, packet: unknown, cb?: Callback): unknown
}

/** Wraps `persistence` in place; returns the set of client ids with outgoing messages stored (for tests). */
export function guardOutgoingAcks (persistence: OutgoingPersistence): ReadonlySet<string> {
  const stored = new Set<string>()
  const enqueue = persistence.outgoingEnqueue.bind(persistence)
  const enqueueCombi = persistence.outgoingEnqueueCombi.bind(persistence)
  const update = persistence.outgoingUpdate.bind(persistence)
  const clear = persistence.outgoingClearMessageId.bind(persistence)
  persistence.outgoingEnqueue = (sub, packet, cb) => {
    stored.add(sub.clientId)
    return enqueue(sub, packet, cb)
  }
  persistence.outgoingEnqueueCombi = (subs, packet, cb) => {
    for (const s of subs) stored.add(s.clientId)
    return enqueueCombi(subs, packet, cb)
  }
  persistence.outgoingUpdate = (client, packet, cb) => {
    stored.add(client.id)
    return update(client, packet, cb)
  }
  persistence.outgoingClearMessageId = (client, packet, cb) => {
    if (stored.has(client.id)) return clear(client, packet, cb)
    // what the store answers for a message id it does not have: no packet
    if (cb !== undefined) {
      cb(null, undefined)
      return undefined
    }
    return Promise.resolve(undefined)
  }
  return stored
}

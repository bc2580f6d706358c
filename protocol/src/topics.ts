/**
 * Herald's MQTT topic layout ([TOPIC-*] in docs/protocol.md). Every name in a topic follows the
 * character rules of names.ts, so each is exactly one topic level.
 */

/** The root of every Herald topic. */
export const ROOT = 'herald'

/** Service -> broker: UP frames ([TOPIC-SVC-1]). */
export function serviceUpTopic (serviceId: string): string {
  return `${ROOT}/s/${serviceId}/up`
}

/** Broker -> service: ACK and ERROR frames ([TOPIC-SVC-2]). */
export function serviceAckTopic (serviceId: string): string {
  return `${ROOT}/s/${serviceId}/ack`
}

/** Client -> broker: REQUEST frames ([TOPIC-CLI-1]). */
export function clientRequestTopic (clientKey: string): string {
  return `${ROOT}/c/${clientKey}/req`
}

/** Broker -> client: EVENTS and CONTROL frames ([TOPIC-CLI-2]). */
export function clientMessageTopic (clientKey: string): string {
  return `${ROOT}/c/${clientKey}/msg`
}

/** Broker -> plain MQTT client: a stored event in the read-only view ([TOPIC-VIEW-1]); a private event's topic adds `/<recipient>`. */
export function eventViewTopic (eventName: string, serviceId: string): string {
  return `${ROOT}/v1/events/${eventName}/${serviceId}`
}

/** Plain MQTT client -> broker: raise an event ([TOPIC-RAISE-1]); private events name their recipient after it. */
export function raiseTopic (eventName: string, recipient?: string): string {
  return recipient === undefined ? `${ROOT}/v1/raise/${eventName}` : `${ROOT}/v1/raise/${eventName}/${recipient}`
}

/** The MQTT client id a service endpoint connects with ([CONN-ID-1]). */
export function serviceClientId (serviceId: string): string {
  return `s/${serviceId}`
}

/** The principal segment of a guest client's key ([CONN-ID-2]). */
export const GUEST_PRINCIPAL = '~guest'

/**
 * A client endpoint's key: `<user>/<clientName>`, or `~guest/<clientName>` for a guest. It is also
 * the recipient address of private events ([EVT-PRIVATE-1]).
 */
export function clientKey (user: string | null, clientName: string): string {
  return `${user ?? GUEST_PRINCIPAL}/${clientName}`
}

/** The MQTT client id a client endpoint connects with ([CONN-ID-2]). */
export function clientClientId (key: string): string {
  return `c/${key}`
}

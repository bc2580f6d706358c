/**
 * Plain-MQTT ingest ([PLAIN-INGEST-*] in docs/protocol.md): a device with a service's credentials
 * raises an event by publishing at QoS 1 to `herald/v1/raise/<event>`. Not built yet: a publish from a
 * plain connection closes it, as before plain connections existed.
 */
import type { AedesOptions, Client } from 'aedes'
import type { PlainPrincipal } from '../auth/principal.js'

type Packet = Parameters<NonNullable<AedesOptions['authorizePublish']>>[1]
type PublishDone = Parameters<NonNullable<AedesOptions['authorizePublish']>>[2]

export class PlainIngest {
  /** aedes' authorizePublish for a plain connection: done() sends the PUBACK (QoS 1), done(err) closes the connection. */
  authorizePublish (_client: Client, _principal: PlainPrincipal, packet: Packet, done: PublishDone): void {
    done(new Error(`publishing on ${packet.topic} is not allowed`))
  }

  /** A plain connection closed. */
  closed (_client: Client): void {}
}

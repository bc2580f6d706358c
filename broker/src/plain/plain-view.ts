/**
 * The plain-MQTT view ([PLAIN-VIEW-*] in docs/protocol.md): ordinary MQTT clients subscribe to
 * `herald/v1/events/...` and get stored events as JSON. Not built yet: every subscription of a plain
 * connection is refused (SUBACK 0x80), as before plain connections existed.
 */
import type { AedesOptions, Client } from 'aedes'
import type { StoredEvent } from '@herald/protocol'
import type { PlainPrincipal } from '../auth/principal.js'

type Subscription = Parameters<NonNullable<AedesOptions['authorizeSubscribe']>>[1]
type SubscribeDone = Parameters<NonNullable<AedesOptions['authorizeSubscribe']>>[2]

export class PlainView {
  /** aedes' authorizeSubscribe for a plain connection. */
  authorizeSubscribe (_client: Client, _principal: PlainPrincipal, _sub: Subscription, done: SubscribeDone): void {
    done(null, null)
  }

  /** Events just stored (and acknowledged to their service). */
  onStored (_events: readonly StoredEvent[]): void {}

  /** A plain connection closed. */
  closed (_client: Client): void {}
}

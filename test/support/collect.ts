/** Collecting what a subscription delivers, and waiting for it. */
import type { ClientEndpoint, HeraldEvent, SubscribeOptions } from '@herald/client-endpoint'
import { waitFor } from '@herald/protocol/testing'

export interface Collected {
  readonly events: HeraldEvent[]
  /** Waits until at least `n` events arrived. */
  until (n: number, what?: string): Promise<HeraldEvent[]>
  payloads (): unknown[]
}

export async function collect (client: ClientEndpoint, event: string, options: SubscribeOptions = {}): Promise<Collected> {
  const events: HeraldEvent[] = []
  await client.subscribe(event, options, (e) => { events.push(e) })
  return {
    events,
    async until (n, what) {
      await waitFor(() => events.length >= n, what ?? `${n} "${event}" events`)
      return events
    },
    payloads: () => events.map((e) => e.payload)
  }
}

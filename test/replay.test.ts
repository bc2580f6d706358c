/**
 * Subscription.reset ([CLI-REPLAY-1], [CLI-REPLAY-2]) end to end: a real broker process, a client
 * endpoint with SQLite positions. A reset redelivers from the new start, flagged `replay` up to
 * where the subscription was, and its position is written durably.
 */
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import type { HeraldEvent } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { eventsOfService } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { Harness } from './support/harness.js'
import { startBrokerProcess, writeTestSite } from './support/processes.js'
import { SECRETS, testSite } from './support/site.js'

describe('subscription reset (replay), with a broker process', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('replays from everything, from a position, or not at all (new), flagged up to where it was; the reset position survives a restart', async () => {
    h = await Harness.create()
    const { proc, url } = await startBrokerProcess(await writeTestSite(h.dir), join(h.dir, 'broker'), 0)
    h.onClose(() => proc.kill())
    const service = new ServiceEndpoint({ url, serviceId: 'svc-a', secret: SECRETS['svc-a'], events: eventsOfService(await testSite(), 'svc-a'), reconnectInitialMs: 20, reconnectMaxMs: 200 })
    h.onClose(() => service.close())
    service.start()
    const raise = async (from: number, to: number): Promise<void> => {
      for (let i = from; i <= to; i++) await service.raise('readings', { i })
      await service.drained()
    }
    const got: HeraldEvent[] = []
    const seen = (from: number): Array<[number, boolean]> => got.slice(from).map((e) => [(e.payload as { i: number }).i, e.replay])
    await raise(0, 5)
    const client = h.client(url, 'alice', 'replayer', { durable: true })
    const sub = await client.subscribe('readings', {}, (e) => { got.push(e) })
    await waitFor(() => got.length === 6, 'the first six')
    expect(seen(0)).toEqual([[0, false], [1, false], [2, false], [3, false], [4, false], [5, false]])
    expect(sub.replaying).toBe(false)

    // everything again, flagged, then what is new, not flagged
    await sub.reset('all')
    await waitFor(() => got.length === 12, 'the six again')
    expect(sub.replaying).toBe(false)
    await raise(6, 6)
    await waitFor(() => got.length === 13, 'the new one')
    expect(seen(6)).toEqual([[0, true], [1, true], [2, true], [3, true], [4, true], [5, true], [6, false]])

    // from the position of event 3
    const at3 = (got[3] as HeraldEvent).position
    let mark = got.length
    await sub.reset({ position: at3 })
    expect(sub.replaying).toBe(true)
    await waitFor(() => got.length === mark + 4, 'events 3 to 6 again')
    await raise(7, 7)
    await waitFor(() => got.length === mark + 5, 'the new one')
    expect(seen(mark)).toEqual([[3, true], [4, true], [5, true], [6, true], [7, false]])

    // new: nothing again, only what comes after
    mark = got.length
    await sub.reset('new')
    await waitFor(() => !sub.replaying, 'the broker to answer the reset')
    await raise(8, 8)
    await waitFor(() => got.length === mark + 1, 'the new one')
    expect(seen(mark)).toEqual([[8, false]])

    // the reset position was written: a restarted client resumes after 8, whatever its start says
    await client.close()
    await raise(9, 9)
    const again: HeraldEvent[] = []
    const client2 = h.client(url, 'alice', 'replayer', { durable: true })
    await client2.subscribe('readings', { start: 'all' }, (e) => { again.push(e) })
    await waitFor(() => again.length === 1, 'the event after the restart')
    expect(again.map((e) => [(e.payload as { i: number }).i, e.replay, e.redelivered])).toEqual([[9, false, false]])
  })
})

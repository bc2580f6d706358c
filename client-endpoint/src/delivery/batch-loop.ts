/**
 * [CLI-BATCH-1..6] The handler loop of a subscription with `batch`: up to `maxEvents` events, or what
 * arrived within `maxWaitMs` of the first, handed over at once in position order; one started mark
 * before the handler (the batch's last position), one commit after it.
 */
import { ConfigError } from '@herald/protocol'
import type { ClientSubscription, QueuedEvent } from '../client-subscription.js'
import { toHeraldEvent, type HeraldEvent } from '../herald-event.js'
import { isPromise, type DeliveryHost } from './delivery-host.js'

/** Runs batches until the queue is empty when it looks (the drain in the core runs it again for later frames). */
export async function batchLoop<Tx> (host: DeliveryHost<Tx>, sub: ClientSubscription<Tx>): Promise<void> {
  const b = sub.batch
  if (b === null) throw new ConfigError(`subscription "${sub.key}" has no batch`)
  const items: QueuedEvent[] = []
  let wire = sub.wireId
  while (!sub.closed && !host.isClosed()) {
    if (items.length > 0 && sub.wireId !== wire) items.length = 0 // offline or reset meanwhile: it is sent again
    for (let item = sub.take(); item !== undefined; item = items.length < b.maxEvents ? sub.take() : undefined) {
      if (item.event.position <= sub.committed) continue // already handled (a frame from before a resubscription)
      if (items.length === 0) wire = sub.wireId
      items.push(item)
      if (items.length >= b.maxEvents) break
    }
    if (items.length === 0) return
    if (items.length < b.maxEvents) {
      // [CLI-BATCH-3] not full: wait for more, at most until maxWaitMs after the first arrived
      const wait = (items[0] as QueuedEvent).arrivedAt + b.maxWaitMs - host.clock.now()
      if (wait > 0) {
        await waitForMore(host, sub, wait)
        continue
      }
    }
    const ok = await runBatch(host, sub, items)
    items.length = 0
    if (!ok) return
  }
}

/** Resolves when an event is queued, after `ms`, or on close/unsubscribe/reset. */
function waitForMore<Tx> (host: DeliveryHost<Tx>, sub: ClientSubscription<Tx>, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      sub.wake = null
      sub.stops.delete(stop)
      t.cancel()
      resolve()
    }
    const t = host.clock.setTimer(stop, ms)
    sub.wake = stop
    sub.stops.add(stop)
  })
}

function views<Tx> (host: DeliveryHost<Tx>, sub: ClientSubscription<Tx>, items: readonly QueuedEvent[], retried: boolean, crash: number | null): HeraldEvent[] {
  const now = host.clock.now()
  const replayUntil = sub.replayUntil
  return items.map((it) => {
    const p = it.event.position
    return toHeraldEvent(it.event, it.ageAtSend + (now - it.arrivedAt), retried || (crash !== null && p <= crash), replayUntil !== null && p <= replayUntil)
  })
}

/** After `last` was handled: flags passed are cleared, counted. */
function passed<Tx> (sub: ClientSubscription<Tx>, last: number): void {
  if (sub.crashStarted !== null && last >= sub.crashStarted) sub.crashStarted = null
  if (sub.replayUntil !== null && last >= sub.replayUntil) sub.replayUntil = null
}

/** [CLI-BATCH-2] One batch; false: the subscription stopped (closed, or its dead letters failed). */
async function runBatch<Tx> (host: DeliveryHost<Tx>, sub: ClientSubscription<Tx>, items: readonly QueuedEvent[]): Promise<boolean> {
  const b = sub.batch as NonNullable<ClientSubscription<Tx>['batch']>
  const last = (items[items.length - 1] as QueuedEvent).event.position
  const crash = sub.crashStarted
  const tx = sub.transaction !== null
  if (!tx) {
    // [CLI-BATCH-2] one write before the handler: every event of the batch may now be handled, so a
    // crash before the commit flags all of it; a range flagged from an earlier run keeps its end
    const w = sub.positions.markStarted(sub.key, crash === null ? last : Math.max(last, crash))
    if (w !== undefined) await w
    const r = host.reserve(sub, last)
    if (r !== undefined) await r
  }
  let events: HeraldEvent[]
  for (let attempt = 1; ; attempt++) {
    events = views(host, sub, items, attempt > 1 && !tx, crash)
    try {
      if (tx) {
        const all = events
        host.runTransaction(sub, () => {
          if (isPromise(b.handler(all))) throw new ConfigError(`subscription "${sub.key}": a transactional handler must be synchronous (it returned a promise)`)
          // [CLI-BATCH-4] the position commits in the handler's transaction, once per batch
          void sub.positions.commit(sub.key, last)
        })
      } else {
        await b.handler(events)
      }
      break
    } catch (error) {
      if (error instanceof ConfigError) throw error
      if (sub.attempts?.maxAttempts != null && attempt >= sub.attempts.maxAttempts) return await oneByOne(host, sub, items) // [CLI-BATCH-5]
      if (!await host.retryWait(sub, events[0] as HeraldEvent, error, attempt)) return false
    }
  }
  if (!tx) {
    const c = sub.crashStarted
    host.track(c !== null && c > last ? sub.positions.advance(sub.key, last, c) : sub.positions.commit(sub.key, last))
  }
  sub.delivered += events.length
  for (const e of events) if (e.redelivered) sub.redelivered++
  passed(sub, last)
  host.committed(sub, last)
  return true
}

/**
 * [CLI-BATCH-5] A batch that failed its last attempt is handed over again one event at a time (an
 * array of one), each event with `maxAttempts` attempts: only the events that fail all of them are
 * dead-lettered. Outside transactional mode the started mark stays at the batch's end meanwhile (the
 * rest of the batch ran before: flagged), so a crash here flags the rest again.
 */
async function oneByOne<Tx> (host: DeliveryHost<Tx>, sub: ClientSubscription<Tx>, items: readonly QueuedEvent[]): Promise<boolean> {
  const b = sub.batch as NonNullable<ClientSubscription<Tx>['batch']>
  const tx = sub.transaction !== null
  const last = (items[items.length - 1] as QueuedEvent).event.position
  if (!tx) sub.crashStarted = Math.max(sub.crashStarted ?? 0, last)
  for (const item of items) {
    const e = item.event
    for (let attempt = 1; ; attempt++) {
      const [event] = views(host, sub, [item], !tx, sub.crashStarted) as [HeraldEvent]
      try {
        if (tx) {
          host.runTransaction(sub, () => {
            if (isPromise(b.handler([event]))) throw new ConfigError(`subscription "${sub.key}": a transactional handler must be synchronous (it returned a promise)`)
            void sub.positions.commit(sub.key, e.position)
          })
        } else {
          await b.handler([event])
          const c = sub.crashStarted
          host.track(c !== null && c > e.position ? sub.positions.advance(sub.key, e.position, c) : sub.positions.commit(sub.key, e.position))
        }
        sub.delivered++
        if (event.redelivered) sub.redelivered++
        break
      } catch (error) {
        if (error instanceof ConfigError) throw error
        if (attempt >= (sub.attempts?.maxAttempts ?? Infinity)) {
          if (!host.giveUp(sub, e, event, attempt, error)) return false
          break
        }
        if (!await host.retryWait(sub, event, error, attempt)) return false
      }
    }
    passed(sub, e.position)
    host.committed(sub, e.position)
  }
  return true
}

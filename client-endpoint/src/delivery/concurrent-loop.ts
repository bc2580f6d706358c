/**
 * [CLI-CONC-1..6] The handler loop of a subscription with `concurrency` N > 1: up to N handlers at
 * once, one at a time per sequencing key in position order. The position is a low-water mark (every
 * event at or below it finished); the finished events above it are recorded with it (`done`), and the
 * started mark is the highest event started, so a crash redelivers, flagged, only events after the
 * mark that were not recorded finished, and skips none.
 */
import { ConfigError, toHeraldError } from '@herald/protocol'
import type { ClientSubscription, QueuedEvent } from '../client-subscription.js'
import { toHeraldEvent, type HeraldEvent } from '../herald-event.js'
import type { DeliveryHost, Write } from './delivery-host.js'

export async function concurrentLoop<Tx> (host: DeliveryHost<Tx>, sub: ClientSubscription<Tx>): Promise<void> {
  const store = sub.positions
  const settle = store.settle?.bind(store)
  const seq = sub.sequenceOf
  if (settle === undefined || seq === null) throw new ConfigError(`subscription "${sub.key}": concurrency needs a position store with settle()`)
  const limit = sub.concurrency
  // the positions taken from the queue and not yet below the low-water mark, ascending
  const order: number[] = []
  let head = 0
  const finished = new Set<number>()
  // per sequencing key with a running handler: the events waiting behind it
  const chains = new Map<string, QueuedEvent[]>()
  let running = 0
  let low = sub.committed
  let highest = 0 // the highest position started in this pass
  let marked = 0 // the started mark last written
  let dirty = false
  // the last of the finished events an earlier run recorded: once the low-water mark passes it, they are done with
  let doneBeforeMax = 0
  if (sub.doneBefore !== null) for (const p of sub.doneBefore) if (p > doneBeforeMax) doneBeforeMax = p
  let failure: unknown = null
  let signal: (() => void) | null = null
  const notify = (): void => {
    const s = signal
    signal = null
    s?.()
  }
  const mark = (): number | null => {
    const m = Math.max(highest, sub.crashStarted ?? 0)
    return m > low ? m : null
  }
  // what finished in this pass, and what an earlier run recorded finished that is still ahead
  const doneList = (): number[] => {
    const all = [...finished]
    if (sub.doneBefore !== null) for (const p of sub.doneBefore) if (p > low && !finished.has(p)) all.push(p)
    return all.sort((a, b) => a - b)
  }
  const writeNow = (): Write => {
    dirty = false
    return settle(sub.key, low, mark(), doneList())
  }
  // finishes in one turn share one write; not waited for: until it is done, the mark covers them
  const scheduleWrite = (): void => {
    if (dirty) return
    dirty = true
    host.clock.defer(() => { if (dirty) host.track(writeNow()) })
  }
  /** Records p finished and moves the low-water mark over what finished below it. */
  const finish = (p: number): void => {
    finished.add(p)
    let moved = false
    while (head < order.length && finished.has(order[head] as number)) {
      low = order[head] as number
      finished.delete(low)
      head++
      moved = true
    }
    if (head > 1024 && head * 2 > order.length) {
      order.splice(0, head)
      head = 0
    }
    if (!moved) return
    if (sub.crashStarted !== null && low >= sub.crashStarted) sub.crashStarted = null
    if (sub.replayUntil !== null && low >= sub.replayUntil) sub.replayUntil = null
    if (sub.doneBefore !== null && low >= doneBeforeMax) sub.doneBefore = null
    host.committed(sub, low)
  }

  /** One event, with its attempts; false: stop (closed, or its dead letter could not be written). */
  const runOne = async (item: QueuedEvent): Promise<boolean> => {
    const e = item.event
    const p = e.position
    let redelivered = sub.crashStarted !== null && p <= sub.crashStarted
    const replay = sub.replayUntil !== null && p <= sub.replayUntil
    if (p > highest) highest = p
    const m = mark() ?? 0
    if (m > marked || dirty) {
      // [CLI-CONC-3] the started mark covers it before its handler runs; finished events not yet
      // written go with it, so at most `concurrency` events are ever started and not recorded finished
      marked = Math.max(marked, m)
      const w = writeNow()
      if (w !== undefined) await w
    }
    const r = host.reserve(sub, p)
    if (r !== undefined) await r
    for (let attempt = 1; ; attempt++) {
      const event: HeraldEvent = toHeraldEvent(e, item.ageAtSend + (host.clock.now() - item.arrivedAt), redelivered, replay)
      try {
        await sub.handler(event)
        sub.delivered++
        if (redelivered) sub.redelivered++
        finish(p)
        scheduleWrite()
        return true
      } catch (error) {
        if (error instanceof ConfigError) throw error
        if (sub.attempts?.maxAttempts != null && attempt >= sub.attempts.maxAttempts) {
          // [CLI-CONC-5] its dead letter with the position record that counts it finished, one write
          finish(p)
          dirty = false
          return host.giveUp(sub, e, event, attempt, error, low, mark(), doneList())
        }
        if (!await host.retryWait(sub, event, error, attempt)) return false
        redelivered = true
      }
    }
  }

  const runChain = async (k: string, first: QueuedEvent): Promise<void> => {
    try {
      for (let it: QueuedEvent | undefined = first; it !== undefined; it = chains.get(k)?.shift()) {
        if (sub.closed || host.isClosed() || failure !== null) break
        if (!await runOne(it)) break
      }
    } catch (err) {
      failure ??= err
    } finally {
      chains.delete(k)
      running--
      notify()
    }
  }

  sub.wake = notify
  try {
    while (!sub.closed && !host.isClosed() && failure === null) {
      const item = running < limit ? sub.take() : undefined
      if (item !== undefined) {
        const p = item.event.position
        if (p <= low || (order.length > head && p <= (order[order.length - 1] as number))) continue // handled, or a frame from before a resubscription
        order.push(p)
        // [CLI-CONC-3] finished in an earlier run and recorded: not delivered again
        if (sub.doneBefore?.has(p) === true) {
          finish(p)
          scheduleWrite()
          continue
        }
        const k = seq(item.event)
        const chain = chains.get(k)
        if (chain !== undefined) {
          chain.push(item) // [CLI-CONC-2] after the running one of its key
          continue
        }
        chains.set(k, [])
        running++
        void runChain(k, item)
        continue
      }
      if (running === 0 && sub.pending === 0) break
      await new Promise<void>((resolve) => { signal = resolve })
    }
  } finally {
    sub.wake = null
    while (running > 0) await new Promise<void>((resolve) => { signal = resolve })
    if (dirty) host.track(writeNow())
  }
  if (failure !== null) throw toHeraldError(failure)
}

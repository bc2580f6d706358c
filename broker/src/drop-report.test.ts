import { describe, expect, it } from 'vitest'
import { Category, ConfigError, PayloadKind, type Logger, type RaisedEvent } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'
import { waitFor } from '@herald/protocol/testing'
import { createBroker } from './broker.js'
import { DropReport } from './drop-report.js'
import { MemoryEventStore } from './event-store/memory-event-store.js'
import type { QueueLimits } from './event-store/event-store.js'

const LIMITS: Record<string, QueueLimits> = {
  q: { category: Category.queueing, lifetimeMs: 1000, maxQueueSize: 2, maxPerRecipient: 1 },
  r: { category: Category.replacing, lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1 }
}

function ev (seq: number, name: string, extra: Partial<RaisedEvent> & { age?: number } = {}): RaisedEvent & { age?: number } {
  return { seq, name, category: LIMITS[name]!.category, raisedAt: 0, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('1'), ...extra }
}

function capture (): { logger: Logger, lines: Array<{ level: string, obj: unknown, msg: string | undefined }> } {
  const lines: Array<{ level: string, obj: unknown, msg: string | undefined }> = []
  const at = (level: string) => (obj: unknown, msg?: string): void => { lines.push({ level, obj, msg }) }
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines }
}

describe('DropReport [STORE-COUNT-1]', () => {
  it('logs one line per report with what was dropped since the previous one, per event name', async () => {
    const store = new MemoryEventStore({ limitsOf: (n) => LIMITS[n] })
    const { logger, lines } = capture()
    const report = new DropReport(store, logger)
    expect(report.report()).toEqual({})
    expect(lines).toEqual([])

    // 5 into a queue of 2: 3 pushed out, in one append; one arrives expired; replacing events replace quietly
    await store.append({ serviceId: 's', instance: 'i', events: [1, 2, 3, 4, 5].map((s) => ev(s, 'q')), handledUpTo: 5, receivedAt: 10_000 })
    await store.append({ serviceId: 's', instance: 'i', events: [ev(6, 'q', { age: 1000 }), ev(7, 'r'), ev(8, 'r')], handledUpTo: 8, receivedAt: 10_000 })
    expect(report.report()).toEqual({ q: { pushedOut: 3, expiredOnArrival: 1 } })
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatchObject({ level: 'warn', obj: { events: { q: { pushedOut: 3, expiredOnArrival: 1 } } } })

    expect(report.report()).toEqual({})
    expect(lines).toHaveLength(1)

    await store.purgeExpired(20_000)
    await store.append({ serviceId: 's', instance: 'i', events: [ev(9, 'r', { isNull: true, payloadKind: PayloadKind.none, payload: Buffer.alloc(0) }), ev(10, 'r', { isNull: true, payloadKind: PayloadKind.none, payload: Buffer.alloc(0) })], handledUpTo: 10, receivedAt: 20_000 })
    expect(report.report()).toEqual({ q: { expired: 2 }, r: { nullsDropped: 1 } })
    expect(lines[1]).toMatchObject({ level: 'info', obj: { events: { q: { expired: 2 }, r: { nullsDropped: 1 } } } })
  })
})

describe('the broker reports drops [STORE-COUNT-1]', () => {
  const siteDoc = {
    events: [{ name: 'q', category: 'queueing', lifetime: '1h', maxQueueSize: 2 }],
    services: [{ id: 's', secret: 'secret-of-s', events: ['q'] }]
  }

  it('shows the store counters in stats().dropped and logs their growth every dropLogIntervalMs', async () => {
    const site = await parseSite(siteDoc)
    const store = new MemoryEventStore({ limitsOf: (n) => site.events.get(n) })
    const { logger, lines } = capture()
    const broker = await createBroker({ site, store, logger, dropLogIntervalMs: 100 })
    try {
      await store.append({ serviceId: 's', instance: 'i', events: [1, 2, 3, 4].map((s) => ev(s, 'q')), handledUpTo: 4, receivedAt: Date.now() })
      expect(broker.stats().dropped).toEqual({ q: { pushedOut: 2, replaced: 0, expired: 0, expiredOnArrival: 0, nullsDropped: 0 } })
      await waitFor(() => lines.some((l) => l.msg === 'events dropped by the store since the last report'), 'the drop report')
      expect(lines.filter((l) => l.msg === 'events dropped by the store since the last report')).toEqual([
        { level: 'warn', obj: { events: { q: { pushedOut: 2 } } }, msg: 'events dropped by the store since the last report' }
      ])
    } finally {
      await broker.close()
    }
  })

  it('refuses a dropLogIntervalMs out of range with a ConfigError naming it', async () => {
    const site = await parseSite(siteDoc)
    for (const bad of [0, 99, 1.5, 86_400_001]) {
      const store = new MemoryEventStore({ limitsOf: (n) => site.events.get(n) })
      await expect(createBroker({ site, store, dropLogIntervalMs: bad })).rejects.toThrow(ConfigError)
      await expect(createBroker({ site, store, dropLogIntervalMs: bad })).rejects.toThrow('dropLogIntervalMs')
    }
  })
})

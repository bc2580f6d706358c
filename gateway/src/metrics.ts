/**
 * The gateway's Prometheus metrics ([OPS-METRICS-1], docs/metrics.md), read from
 * `gateway.status()` at each scrape (prom-client `collect()`): nothing on the frame path.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import { PortState } from './device-port.js'
import type { DeviceLineStatus, Gateway, GatewayStatus } from './gateway.js'

/** The frames a gateway does not raise events for, by reason (`herald_gateway_frames_refused_total`). */
const REFUSED: ReadonlyArray<readonly [string, (d: DeviceLineStatus) => number]> = [
  ['corrupt', (d) => d.corrupt],
  ['duplicate', (d) => d.counters?.duplicates ?? 0],
  ['out_of_order', (d) => d.counters?.outOfOrder ?? 0],
  ['unmapped', (d) => d.counters?.unmapped ?? 0],
  ['commit_failed', (d) => d.counters?.commitFailures ?? 0]
]

/** A registry with the gateway's metrics (and Node's process metrics). */
export function gatewayMetricsRegistry (gateway: Gateway): Registry {
  const registry = new Registry()
  const registers = [registry]
  collectDefaultMetrics({ register: registry })
  // one status() per scrape, shared by every collect() of that scrape
  let snapshot: GatewayStatus | null = null
  const status = (): GatewayStatus => {
    if (snapshot === null) {
      snapshot = gateway.status()
      setImmediate(() => { snapshot = null })
    }
    return snapshot
  }
  const perLine = (pick: (d: DeviceLineStatus) => number) => function (this: Counter): void {
    this.reset()
    for (const d of status().devices) this.inc({ line: d.name }, pick(d))
  }

  new Gauge({ name: 'herald_gateway_backlog_events', help: 'Events raised and not yet acknowledged by the broker', registers, collect () { this.set(status().service.backlog) } })
  new Gauge({ name: 'herald_gateway_backlog_bytes', help: 'Payload bytes of the backlog', registers, collect () { this.set(status().service.backlogBytes) } })
  new Gauge({ name: 'herald_gateway_durable', help: '1 while handled reports are durable at the gateway, 0 after its SQLite level failed', registers, collect () { this.set(status().durable ? 1 : 0) } })
  new Gauge({ name: 'herald_gateway_broker_connected', help: '1 while the gateway is connected to the broker', registers, collect () { this.set(status().service.state === 'online' ? 1 : 0) } })
  new Gauge({
    name: 'herald_gateway_device_line_up',
    help: '1 while a device line is online (open, the device said HELLO, not stale), else 0',
    labelNames: ['line'],
    registers,
    collect () {
      this.reset()
      for (const d of status().devices) this.set({ line: d.name }, d.state === PortState.online ? 1 : 0)
    }
  })
  new Counter({ name: 'herald_gateway_line_opens_total', help: 'Times a device line was opened', labelNames: ['line'], registers, collect: perLine((d) => d.opens) })
  new Counter({ name: 'herald_gateway_frames_total', help: 'Frames decoded on a device line', labelNames: ['line'], registers, collect: perLine((d) => d.frames) })
  new Counter({
    name: 'herald_gateway_frames_refused_total',
    help: 'Frames that raised nothing, by reason: corrupt (decoder), duplicate, out_of_order, unmapped (no payload built), commit_failed (the device resends)',
    labelNames: ['line', 'reason'],
    registers,
    collect () {
      this.reset()
      for (const d of status().devices) for (const [reason, pick] of REFUSED) this.inc({ line: d.name, reason }, pick(d))
    }
  })
  new Counter({ name: 'herald_gateway_reports_handled_total', help: 'Device reports handled (their events raised and durable, or held while not durable)', labelNames: ['line'], registers, collect: perLine((d) => d.counters?.handled ?? 0) })
  new Counter({ name: 'herald_gateway_events_raised_total', help: 'Events raised from device reports', labelNames: ['line'], registers, collect: perLine((d) => d.counters?.raised ?? 0) })
  return registry
}

/** Null while the gateway runs with durable persistence, else why not (for /readyz). */
export function gatewayProblem (gateway: Gateway): string | null {
  if (gateway.closed) return 'the gateway is closing'
  const s = gateway.endpoint.status
  if (s.state === 'closed') return 'the service endpoint is closed'
  if (!s.durable) return 'the gateway\'s SQLite level failed: reports are acknowledged only after the broker acknowledged their events'
  return null
}

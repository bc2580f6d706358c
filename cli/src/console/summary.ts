/** The one-line summary of a console client, e.g. `online · 1,234 events · 12.3/s · alarms 1,200 · temperature 34 · reconnects 2`. */
import type { SummaryView } from './event-stats.js'
import { formatAge, formatCount, formatRate } from './format.js'
import { style } from './style.js'

/** How renderSummary prints. */
export interface SummaryOptions {
  /** ANSI colors. Default false. */
  readonly color?: boolean
}

// a summary is one line: no control character of an error message may break or move it
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g

/**
 * The summary as one line (no newline): the connection state — when not online, with how long since
 * it last was and the last error — the total, the rate, the count per event and the reconnects.
 */
export function renderSummary (v: SummaryView, options: SummaryOptions = {}): string {
  const s = style(options.color ?? false)
  const down = v.downForMs === null ? '' : ` ${formatAge(v.downForMs)}`
  let state: string
  switch (v.state) {
    case 'online': state = s.green('online'); break
    case 'connecting': state = s.yellow(`connecting${down}`); break
    case 'offline': state = s.red(`offline${down}`); break
    default: state = s.dim(v.state)
  }
  if ((v.state === 'connecting' || v.state === 'offline') && v.lastError !== null) {
    state += ` ${s.red(`(${v.lastError.code}: ${v.lastError.message.replace(CONTROL, ' ')})`)}`
  }
  const parts = [
    state,
    `${formatCount(v.total)} event${v.total === 1 ? '' : 's'}`,
    formatRate(v.rate),
    ...v.perEvent.map(([name, n]) => `${s.bold(name)} ${formatCount(n)}`)
  ]
  if (v.reconnects > 0) parts.push(s.yellow(`reconnects ${formatCount(v.reconnects)}`))
  return parts.join(s.dim(' · '))
}

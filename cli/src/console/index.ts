/**
 * Console rendering shared by `herald tail` and other commands that print events: event lines (human
 * or JSON), ages and times, the live summary line and the console that keeps it on the last line.
 * No global state: each command makes its own EventStats and LiveConsole.
 */
export { formatAge, formatClockTime, formatCount, formatRate } from './format.js'
export { colorEnabled, fitToWidth, stripStyle, style, type ColorTarget, type Style } from './style.js'
export {
  EVENT_LINE_DEFAULTS, eventRecord, payloadKind, renderEventJson, renderEventLine, renderPayload, terminalSafeJson,
  type ConsoleEvent, type EventLineOptions, type EventRecord, type PayloadKindName
} from './event-line.js'
export { RATE_METER_DEFAULTS, RateMeter, type RateMeterOptions } from './rate-meter.js'
export { EVENT_STATS_DEFAULTS, EventStats, type ConnectionStatus, type EventStatsOptions, type SummaryView } from './event-stats.js'
export { renderSummary, type SummaryOptions } from './summary.js'
export { LIVE_CONSOLE_DEFAULTS, LiveConsole, summaryModeFor, type ConsoleStream, type LiveConsoleOptions, type SummaryMode } from './live-console.js'

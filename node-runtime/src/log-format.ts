/**
 * How the `herald` commands write their logs ([CMD-USAGE-1]): pino's JSON lines for machines, or a
 * short human line on a terminal. `auto` (the default) picks text when the stream is a terminal.
 */
import type { Writable } from 'node:stream'

export const LOG_FORMATS = ['auto', 'json', 'text'] as const
export type LogFormat = typeof LOG_FORMATS[number]

const LEVELS: Readonly<Record<number, string>> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' }

/** A pino JSON line as a short human line: `<who>: warn: <msg> {fields}`. */
export function humanLogLine (json: string, who: string): string {
  try {
    const { level, msg, time: _t, pid: _p, hostname: _h, ...rest } = JSON.parse(json) as Record<string, unknown>
    const fields = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : ''
    return `${who}: ${LEVELS[level as number] ?? JSON.stringify(level)}: ${typeof msg === 'string' ? msg : JSON.stringify(msg ?? '')}${fields}`
  } catch {
    return `${who}: ${json.trimEnd()}`
  }
}

/**
 * The destination to give pino for `format` on `stream`: undefined for JSON (pino's own, on stdout),
 * or a writer of human lines.
 */
export function logDestination (format: LogFormat, stream: Writable & { isTTY?: boolean }, who: string): { write: (line: string) => void } | undefined {
  const text = format === 'text' || (format === 'auto' && stream.isTTY === true)
  if (!text) return undefined
  return { write: (line: string) => { stream.write(`${humanLogLine(line, who)}\n`) } }
}

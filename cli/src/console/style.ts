/** ANSI colors for console output, on only where they belong, and fitting styled text to a width. */

/** What decides whether a stream gets colors. */
export interface ColorTarget {
  readonly isTTY?: boolean
}

/**
 * True if output to `stream` should be colored: it is a terminal, `NO_COLOR` is unset or empty
 * (https://no-color.org) and `TERM` is not `dumb`. The caller passes the environment (only CLI entry
 * points read it).
 */
export function colorEnabled (stream: ColorTarget, env: Readonly<Record<string, string | undefined>>): boolean {
  if (stream.isTTY !== true) return false
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false
  return env.TERM !== 'dumb'
}

/** The styles console output uses; each wraps text, or returns it unchanged without colors. */
export interface Style {
  readonly dim: (s: string) => string
  readonly bold: (s: string) => string
  readonly red: (s: string) => string
  readonly green: (s: string) => string
  readonly yellow: (s: string) => string
  readonly blue: (s: string) => string
  readonly magenta: (s: string) => string
  readonly cyan: (s: string) => string
}

const sgr = (open: number, close: number) => (s: string): string => `\x1b[${open}m${s}\x1b[${close}m`
const plain = (s: string): string => s

const COLORED: Style = Object.freeze({
  dim: sgr(2, 22), bold: sgr(1, 22), red: sgr(31, 39), green: sgr(32, 39), yellow: sgr(33, 39), blue: sgr(34, 39), magenta: sgr(35, 39), cyan: sgr(36, 39)
})
const PLAIN: Style = Object.freeze({
  dim: plain, bold: plain, red: plain, green: plain, yellow: plain, blue: plain, magenta: plain, cyan: plain
})

/** The colored styles, or ones that leave text unchanged. */
export function style (color: boolean): Style {
  return color ? COLORED : PLAIN
}

// eslint-disable-next-line no-control-regex
const SGR = /\x1b\[[0-9;]*m/g
// eslint-disable-next-line no-control-regex
const LEADING_SGR = /^\x1b\[[0-9;]*m/

/** `s` without ANSI color sequences. */
export function stripStyle (s: string): string {
  return s.replace(SGR, '')
}

/**
 * Cuts styled text to at most `width` visible characters (color sequences do not count), ending in
 * `…` when cut; colors are reset after a cut. Every UTF-16 unit counts as one column: summary lines
 * are ASCII apart from event names, which are ASCII too ([SITE-NAME-1]).
 */
export function fitToWidth (s: string, width: number): string {
  if (width <= 0) return ''
  if (stripStyle(s).length <= width) return s
  let out = ''
  let visible = 0
  let styled = false
  for (let i = 0; i < s.length && visible < width - 1;) {
    const m = s.charCodeAt(i) === 0x1b ? LEADING_SGR.exec(s.slice(i)) : null
    if (m !== null) {
      out += m[0]
      i += m[0].length
      styled = true
    } else {
      out += s[i]
      visible++
      i++
    }
  }
  return styled ? `${out}…\x1b[0m` : `${out}…`
}

/**
 * Event lines on one stream and a summary line on another: on a terminal the summary is redrawn in
 * place on the last line, every line printed above it; elsewhere it is printed as a line of its own
 * every few seconds, or not at all.
 */
import { fitToWidth } from './style.js'

/** The part of a writable stream the console uses (process.stdout and process.stderr fit). */
export interface ConsoleStream {
  write (chunk: string): boolean
  once (event: 'drain', listener: () => void): unknown
  removeListener (event: 'drain', listener: () => void): unknown
  readonly isTTY?: boolean
  /** Terminal width, when a terminal (0 or absent: 80 is assumed). */
  readonly columns?: number
}

/** `live`: redrawn in place (a terminal); `periodic`: a line every interval; `off`: none. */
export type SummaryMode = 'live' | 'periodic' | 'off'

/** The summary mode for a summary written to `stream`: live on a terminal, else periodic; off if not wanted. */
export function summaryModeFor (stream: Pick<ConsoleStream, 'isTTY'>, wanted: boolean): SummaryMode {
  if (!wanted) return 'off'
  return stream.isTTY === true ? 'live' : 'periodic'
}

/** Defaults of LiveConsoleOptions. */
export const LIVE_CONSOLE_DEFAULTS = Object.freeze({
  liveIntervalMs: 1000,
  periodicIntervalMs: 5000,
  columns: 80
})

/** Where a LiveConsole writes, and how it shows the summary. */
export interface LiveConsoleOptions {
  /** Where event lines go (stdout). */
  readonly out: ConsoleStream
  /** Where the summary and notes go (stderr). */
  readonly err: ConsoleStream
  readonly summary: SummaryMode
  /** Makes the summary text (one line, may be colored); called at each redraw. */
  readonly render: () => string
  /** How often the summary is redrawn (live, default 1,000 ms) or printed (periodic, default 5,000 ms). */
  readonly intervalMs?: number
}

// carriage return, then erase the whole line: the cursor stays on the (now empty) last line
const CLEAR_LINE = '\r\x1b[2K'

/**
 * Writes event lines and keeps the summary out of their way: `start()`, then `line()` per event and
 * `note()` per message, `refresh()` after a state change, `stop()` at the end.
 */
export class LiveConsole {
  private readonly o: LiveConsoleOptions
  private timer: NodeJS.Timeout | null = null
  private redrawScheduled = false
  /** The live summary is on the terminal's last line, with the cursor after it. */
  private drawn = false
  private stopped = false
  private readonly drainWaiters = new Set<() => void>()

  constructor (options: LiveConsoleOptions) {
    this.o = options
  }

  /** Shows the summary (live) and starts its timer. */
  start (): this {
    if (this.stopped || this.timer !== null || this.o.summary === 'off') return this
    const live = this.o.summary === 'live'
    const every = this.o.intervalMs ?? (live ? LIVE_CONSOLE_DEFAULTS.liveIntervalMs : LIVE_CONSOLE_DEFAULTS.periodicIntervalMs)
    this.timer = setInterval(() => {
      if (live) this.redraw()
      else this.o.err.write(`${this.o.render()}\n`)
    }, every)
    this.timer.unref()
    if (live) this.redraw()
    return this
  }

  /**
   * Prints an event line on `out`, above the live summary. The write starts at once; the promise
   * resolves when `out` can take more (so a slow reader slows the caller instead of filling memory),
   * or when the console stops.
   */
  async line (text: string): Promise<void> {
    if (this.stopped) return
    // the summary shares the terminal only if `out` is one too (else it stays where it is)
    if (this.drawn && this.o.out.isTTY === true) this.erase()
    const ok = this.o.out.write(`${text}\n`)
    this.scheduleRedraw()
    if (!ok) await this.drained()
  }

  /** Prints a message line on `err` (notices, warnings), above the live summary. */
  note (text: string): void {
    if (this.stopped) {
      this.o.err.write(`${text}\n`)
      return
    }
    if (this.drawn) this.erase()
    this.o.err.write(`${text}\n`)
    this.scheduleRedraw()
  }

  /** Redraws the live summary at once (e.g. after a state change). */
  refresh (): void {
    this.redraw()
  }

  /**
   * Stops the timer, erases the live summary and, with `final`, prints the summary one last time as a
   * line of its own (in any mode but off). Pending line() calls resolve. Later lines are dropped;
   * notes still print.
   */
  stop (final = false): void {
    if (this.stopped) return
    this.stopped = true
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    if (this.drawn) this.erase()
    if (final && this.o.summary !== 'off') this.o.err.write(`${this.o.render()}\n`)
    for (const w of [...this.drainWaiters]) w()
  }

  private erase (): void {
    this.o.err.write(CLEAR_LINE)
    this.drawn = false
  }

  private redraw (): void {
    if (this.stopped || this.o.summary !== 'live') return
    // a terminal without a size (a bare pty) reports 0 columns
    const columns = this.o.err.columns !== undefined && this.o.err.columns > 0 ? this.o.err.columns : LIVE_CONSOLE_DEFAULTS.columns
    const width = Math.max(1, columns - 1)
    // never wider than the terminal: a wrapped summary could not be erased in place
    this.o.err.write(`${CLEAR_LINE}${fitToWidth(this.o.render(), width)}`)
    this.drawn = true
  }

  /** One redraw after a burst of lines, not one per line. */
  private scheduleRedraw (): void {
    if (this.redrawScheduled || this.o.summary !== 'live') return
    this.redrawScheduled = true
    setImmediate(() => {
      this.redrawScheduled = false
      this.redraw()
    })
  }

  private drained (): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.drainWaiters.delete(done)
        this.o.out.removeListener('drain', done)
        resolve()
      }
      this.drainWaiters.add(done)
      this.o.out.once('drain', done)
    })
  }
}

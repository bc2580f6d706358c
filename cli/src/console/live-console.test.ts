import { EventEmitter } from 'node:events'
import { describe, it, expect } from 'vitest'
import { LiveConsole, summaryModeFor, type ConsoleStream } from './live-console.js'

/** What a terminal shows after some output: \r, \n, erase-line (ESC[2K) and colors (ignored). */
class Screen {
  readonly rows: string[] = ['']
  private row = 0
  private col = 0

  feed (text: string): void {
    for (let i = 0; i < text.length; i++) {
      const c = text[i] as string
      if (c === '\x1b') {
        const m = /^\x1b\[([0-9;]*)([A-Za-z])/.exec(text.slice(i)) // eslint-disable-line no-control-regex
        if (m === null) throw new Error(`unexpected escape at ${JSON.stringify(text.slice(i, i + 8))}`)
        if (m[2] === 'K' && m[1] === '2') this.rows[this.row] = ''
        else if (m[2] !== 'm') throw new Error(`unexpected sequence ${JSON.stringify(m[0])}`)
        i += m[0].length - 1
      } else if (c === '\r') {
        this.col = 0
      } else if (c === '\n') {
        this.row++
        this.col = 0
        this.rows[this.row] ??= ''
      } else {
        const line = (this.rows[this.row] ?? '').padEnd(this.col)
        this.rows[this.row] = line.slice(0, this.col) + c + line.slice(this.col + 1)
        this.col++
      }
    }
  }
}

class FakeStream extends EventEmitter implements ConsoleStream {
  readonly written: string[] = []
  accept = true
  constructor (readonly isTTY: boolean, private readonly screen: Screen | null, readonly columns = 80) { super() }
  write (chunk: string): boolean {
    this.written.push(chunk)
    this.screen?.feed(chunk)
    return this.accept
  }
}

const nextTurn = (): Promise<void> => new Promise((resolve) => { setImmediate(resolve) })

/** stdout and stderr on one terminal, as when an operator runs the command in a shell. */
function terminal (columns = 80): { screen: Screen, out: FakeStream, err: FakeStream } {
  const screen = new Screen()
  return { screen, out: new FakeStream(true, screen, columns), err: new FakeStream(true, screen, columns) }
}

describe('LiveConsole on a terminal', () => {
  it('keeps the summary on the last line, every event line whole above it', async () => {
    const { screen, out, err } = terminal()
    let n = 0
    const c = new LiveConsole({ out, err, summary: 'live', render: () => `summary ${n}` }).start()
    expect(screen.rows).toEqual(['summary 0'])
    n = 2
    await c.line('event one')
    await c.line('event two')
    await nextTurn()
    expect(screen.rows).toEqual(['event one', 'event two', 'summary 2'])
    c.note('herald tail: warn: something')
    await c.line('event three')
    n = 3
    c.refresh()
    expect(screen.rows).toEqual(['event one', 'event two', 'herald tail: warn: something', 'event three', 'summary 3'])
    c.stop(true)
    expect(screen.rows).toEqual(['event one', 'event two', 'herald tail: warn: something', 'event three', 'summary 3', ''])
    await c.line('after stop')
    expect(out.written.join('')).not.toContain('after stop')
  })

  it('redraws once after a burst of lines, not once per line', async () => {
    const { out, err } = terminal()
    let renders = 0
    const c = new LiveConsole({ out, err, summary: 'live', render: () => `summary ${++renders}` }).start()
    for (let i = 0; i < 100; i++) void c.line(`event ${i}`)
    await nextTurn()
    expect(renders).toBe(2)
    c.stop()
  })

  it('never draws a summary wider than the terminal, which could not be erased in place', async () => {
    const { screen, out, err } = terminal(20)
    const c = new LiveConsole({ out, err, summary: 'live', render: () => 'online · 1,234 events · 12.0/s · alarms 1,234' }).start()
    await c.line('a line longer than the twenty columns of this terminal')
    await nextTurn()
    // one column short of the width: a character in the last column makes some terminals wrap
    expect(screen.rows.at(-1)).toBe('online · 1,234 eve…')
    c.stop()
  })

  it('assumes 80 columns on a terminal that reports none', () => {
    const { screen, out, err } = terminal(0)
    const c = new LiveConsole({ out, err, summary: 'live', render: () => 'x'.repeat(100) }).start()
    expect(screen.rows[0]).toBe(`${'x'.repeat(78)}…`)
    c.stop()
  })

  it('leaves the summary alone when events go to a pipe', async () => {
    const screen = new Screen()
    const out = new FakeStream(false, null)
    const err = new FakeStream(true, screen)
    const c = new LiveConsole({ out, err, summary: 'live', render: () => 'summary' }).start()
    await c.line('event')
    await nextTurn()
    expect(out.written).toEqual(['event\n'])
    expect(screen.rows).toEqual(['summary'])
    c.stop()
    expect(screen.rows).toEqual([''])
  })
})

describe('LiveConsole off a terminal', () => {
  it('writes plain lines, and the summary only as a line of its own', async () => {
    const out = new FakeStream(false, null)
    const err = new FakeStream(false, null)
    const c = new LiveConsole({ out, err, summary: 'periodic', render: () => 'summary' }).start()
    await c.line('event')
    c.note('note')
    await nextTurn()
    c.stop(true)
    expect(out.written).toEqual(['event\n'])
    expect(err.written).toEqual(['note\n', 'summary\n'])
  })

  it('prints no summary at all when off', () => {
    const out = new FakeStream(false, null)
    const err = new FakeStream(true, null)
    const c = new LiveConsole({ out, err, summary: 'off', render: () => 'summary' }).start()
    c.stop(true)
    expect(err.written).toEqual([])
  })
})

describe('LiveConsole backpressure', () => {
  it('waits for a full stream to drain, and stops waiting when stopped', async () => {
    const out = new FakeStream(false, null)
    const err = new FakeStream(false, null)
    const c = new LiveConsole({ out, err, summary: 'off', render: () => '' })
    out.accept = false
    let done = false
    const p = c.line('one').then(() => { done = true })
    await nextTurn()
    expect(done).toBe(false)
    out.emit('drain')
    await p
    const q = c.line('two').then(() => { done = false })
    await nextTurn()
    expect(done).toBe(true)
    c.stop()
    await q
    expect(out.listenerCount('drain')).toBe(0)
  })
})

describe('summaryModeFor', () => {
  it('is live on a terminal, periodic elsewhere, off when not wanted', () => {
    expect(summaryModeFor({ isTTY: true }, true)).toBe('live')
    expect(summaryModeFor({ isTTY: false }, true)).toBe('periodic')
    expect(summaryModeFor({ isTTY: true }, false)).toBe('off')
  })
})

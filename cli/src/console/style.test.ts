import { describe, it, expect } from 'vitest'
import { colorEnabled, fitToWidth, stripStyle, style } from './style.js'

describe('colorEnabled', () => {
  it('colors a terminal unless NO_COLOR is set or TERM is dumb', () => {
    expect(colorEnabled({ isTTY: true }, {})).toBe(true)
    expect(colorEnabled({ isTTY: false }, {})).toBe(false)
    expect(colorEnabled({}, {})).toBe(false)
    expect(colorEnabled({ isTTY: true }, { NO_COLOR: '1' })).toBe(false)
    expect(colorEnabled({ isTTY: true }, { NO_COLOR: '' })).toBe(true)
    expect(colorEnabled({ isTTY: true }, { TERM: 'dumb' })).toBe(false)
  })
})

describe('fitToWidth', () => {
  it('leaves text that fits, and cuts the rest with an ellipsis', () => {
    expect(fitToWidth('hello', 5)).toBe('hello')
    expect(fitToWidth('hello world', 6)).toBe('hello…')
    expect(fitToWidth('hello', 0)).toBe('')
    expect(fitToWidth('hello', 1)).toBe('…')
  })

  it('does not count color sequences, and resets colors after a cut', () => {
    const s = style(true)
    const text = `${s.green('online')} · ${s.bold('alarms')} 12`
    expect(fitToWidth(text, 18)).toBe(text)
    const cut = fitToWidth(text, 12)
    expect(stripStyle(cut)).toBe('online · al…')
    expect(cut.endsWith('\x1b[0m')).toBe(true)
  })
})

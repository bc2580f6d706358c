import { describe, it, expect } from 'vitest'
import { formatAge, formatClockTime, formatCount, formatRate } from './format.js'

describe('formatAge', () => {
  it.each([
    [0, '0ms'],
    [7, '7ms'],
    [120, '120ms'],
    [999.4, '999ms'],
    [999.6, '1s'],
    [1000, '1s'],
    [1049, '1s'],
    [1050, '1.1s'],
    [3200, '3.2s'],
    [9940, '9.9s'],
    [9960, '10s'],
    [42_000, '42s'],
    [59_400, '59s'],
    [59_600, '1m'],
    [90_000, '1.5m'],
    [12 * 60_000, '12m'],
    [59.6 * 60_000, '1h'],
    [2 * 3_600_000, '2h'],
    [2.25 * 3_600_000, '2.3h'],
    [23.4 * 3_600_000, '23h'],
    [23.6 * 3_600_000, '1d'],
    [3.5 * 86_400_000, '3.5d'],
    [365 * 86_400_000, '365d']
  ])('%d ms is %s', (ms, text) => {
    expect(formatAge(ms)).toBe(text)
  })

  it('treats negative and non-finite values as 0', () => {
    expect(formatAge(-5)).toBe('0ms')
    expect(formatAge(Number.NaN)).toBe('0ms')
    expect(formatAge(Number.POSITIVE_INFINITY)).toBe('0ms')
  })
})

describe('formatClockTime', () => {
  it('prints local wall-clock time with milliseconds, zero-padded', () => {
    expect(formatClockTime(new Date(2024, 0, 2, 3, 4, 5, 6).getTime())).toBe('03:04:05.006')
    expect(formatClockTime(new Date(2024, 11, 31, 23, 59, 59, 999).getTime())).toBe('23:59:59.999')
  })
})

describe('formatCount and formatRate', () => {
  it('use thousands separators and one decimal, whatever the locale', () => {
    expect(formatCount(0)).toBe('0')
    expect(formatCount(1234567)).toBe('1,234,567')
    expect(formatRate(12.345)).toBe('12.3/s')
    expect(formatRate(1500)).toBe('1,500.0/s')
    expect(formatRate(0)).toBe('0.0/s')
    expect(formatRate(Number.NaN)).toBe('0.0/s')
  })
})

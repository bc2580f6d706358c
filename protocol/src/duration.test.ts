import { describe, expect, it } from 'vitest'
import { formatDuration, parseByteSize, parseDuration } from './duration.js'
import { ConfigError, ErrorCode } from './errors.js'

function configError (fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error('expected a ConfigError, but the call returned')
}

describe('parseDuration', () => {
  it.each<[unknown, number]>([
    ['250ms', 250],
    ['90s', 90_000],
    ['10m', 600_000],
    ['2h', 7_200_000],
    ['1.5h', 5_400_000],
    ['7d', 604_800_000],
    ['2w', 1_209_600_000],
    ['0s', 0],
    ['0.4ms', 0],
    ['1.5ms', 2],
    [' 10m ', 600_000],
    ['10 m', 600_000],
    [0, 0],
    [1500, 1500],
    [1499.6, 1500]
  ])('%j is %i ms', (input, ms) => {
    expect(parseDuration(input, 'lifetime')).toBe(ms)
  })

  it.each<[unknown]>([
    ['10'], ['10M'], ['10 minutes'], ['m'], ['-1s'], ['.5s'], ['5.s'], ['1e3s'], ['1h30m'], [''],
    [-1], [Number.NaN], [Number.POSITIVE_INFINITY], [null], [undefined], [true], [{}], [['1s']]
  ])('%j is refused with a CONFIG_INVALID ConfigError naming the option and the value', (input) => {
    const err = configError(() => parseDuration(input, 'events[3] (alarm): lifetime'))
    expect(err.code).toBe(ErrorCode.CONFIG_INVALID)
    expect(err.message).toContain('events[3] (alarm): lifetime: ')
    expect(err.message).toContain(`${JSON.stringify(input)} is not a duration`)
  })
})

describe('parseByteSize', () => {
  it.each<[unknown, number]>([
    ['500B', 500],
    ['500', 500],
    ['0', 0],
    ['64KiB', 65_536],
    ['1MiB', 1_048_576],
    ['2GiB', 2_147_483_648],
    ['64KB', 64_000],
    ['3MB', 3_000_000],
    ['1GB', 1_000_000_000],
    [' 16 KiB ', 16_384],
    [0, 0],
    [65_536, 65_536],
    [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]
  ])('%j is %i bytes', (input, bytes) => {
    expect(parseByteSize(input, 'maxPayload')).toBe(bytes)
  })

  it.each<[unknown]>([
    ['1.5KiB'], ['64kib'], ['64 kB'], ['1TiB'], ['KiB'], ['-1'], ['-1B'], [''], ['64KiBs'],
    [-1], [1.5], [Number.NaN], [2 ** 53], [null], [undefined], [false], [{ bytes: 1 }]
  ])('%j is refused with a ConfigError naming the option and the value', (input) => {
    const err = configError(() => parseByteSize(input, 'events[0] (t): maxPayload'))
    expect(err.code).toBe(ErrorCode.CONFIG_INVALID)
    expect(err.message).toContain('events[0] (t): maxPayload: ')
    expect(err.message).toContain(`${JSON.stringify(input)} is not a size`)
  })
})

describe('formatDuration', () => {
  it.each<[number, string]>([
    [604_800_000, '7d'],
    [31_536_000_000, '365d'],
    [86_400_000, '1d'],
    [90_000_000, '25h'],
    [3_600_000, '1h'],
    [5_400_000, '90m'],
    [600_000, '10m'],
    [90_000, '90s'],
    [1000, '1s'],
    [1500, '1500ms'],
    [999, '999ms'],
    [0, '0ms']
  ])('%i ms is %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text)
  })

  it('its output parses back to the same number of milliseconds', () => {
    for (const ms of [0, 1, 999, 1000, 1500, 61_000, 3_600_000, 5_400_000, 86_400_000, 604_800_000, 31_536_000_000]) {
      expect(parseDuration(formatDuration(ms), 'x')).toBe(ms)
    }
  })
})

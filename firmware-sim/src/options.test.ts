import { describe, expect, it } from 'vitest'
import { SimConfigError } from './errors.js'
import { parseDevices, parseDuration, parseFaults, parseLink, parseRate } from './options.js'

function fails (fn: () => unknown, message: string | RegExp): void {
  expect(fn).toThrow(SimConfigError)
  expect(fn).toThrow(message)
}

describe('option parsers', () => {
  it('durations need a unit', () => {
    expect(parseDuration('500ms')).toBe(500)
    expect(parseDuration('1.5s')).toBe(1500)
    expect(parseDuration('2m')).toBe(120_000)
    expect(parseDuration('2min')).toBe(120_000)
    expect(parseDuration('1h')).toBe(3_600_000)
    for (const bad of ['5', '-1s', 's', '1 d', '']) fails(() => parseDuration(bad), 'is not a duration')
  })

  it('rates are per second unless said', () => {
    expect(parseRate('5/s')).toBe(5)
    expect(parseRate('5')).toBe(5)
    expect(parseRate('30/min')).toBe(0.5)
    expect(parseRate('360/h')).toBe(0.1)
    expect(parseRate('0')).toBe(0)
    for (const bad of ['fast', '5/d', '-1/s', '/s']) fails(() => parseRate(bad), 'is not a rate')
  })

  it('devices are <model>[:<count>] of known models', () => {
    expect(parseDevices('thermostat:3,door:2,pump')).toEqual([{ model: 'thermostat', count: 3 }, { model: 'door', count: 2 }, { model: 'pump', count: 1 }])
    fails(() => parseDevices('toaster:1'), 'unknown model "toaster" (models: thermostat, door, pump)')
    fails(() => parseDevices('door:0'), '"door:0": the count is a whole number from 1')
    fails(() => parseDevices('door:x'), 'is not <model>[:<count>]')
    fails(() => parseDevices(''), 'is not <model>[:<count>]')
  })

  it('links are tcp ports or serial paths', () => {
    expect(parseLink('tcp:7000')).toEqual({ kind: 'tcp', basePort: 7000 })
    expect(parseLink('tcp:0')).toEqual({ kind: 'tcp', basePort: 0 })
    expect(parseLink('tcp:0.0.0.0:7000')).toEqual({ kind: 'tcp', host: '0.0.0.0', basePort: 7000 })
    expect(parseLink('tcp:[::1]:7000')).toEqual({ kind: 'tcp', host: '::1', basePort: 7000 })
    expect(parseLink('serial:/dev/ttyS1,/dev/ttyS2', 9600)).toEqual({ kind: 'serial', paths: ['/dev/ttyS1', '/dev/ttyS2'], baudRate: 9600 })
    fails(() => parseLink('tcp:70000'), 'a port from 0 to 65535')
    fails(() => parseLink('tcp:x'), 'is not tcp:<port> or tcp:<host>:<port>')
    fails(() => parseLink('serial:'), 'is not serial:<tty>')
    fails(() => parseLink('udp:7000'), 'is not a link')
  })

  it('faults: probabilities, and timed faults every period or at times', () => {
    expect(parseFaults('garbage=0.01,truncate=0.02,badcrc=0.03,reboot=60s,silence=5s/60s,burst=20/30s,unplug=3s/45s')).toEqual({
      garbage: 0.01,
      truncate: 0.02,
      badCrc: 0.03,
      reboot: { everyMs: 60_000 },
      silence: { everyMs: 60_000, durationMs: 5000 },
      burst: { everyMs: 30_000, count: 20 },
      unplug: { everyMs: 45_000, durationMs: 3000 }
    })
    expect(parseFaults('reboot=@10s+25s,silence=2s@30s+1m,burst=5@1s')).toEqual({
      reboot: { atMs: [10_000, 25_000] },
      silence: { atMs: [30_000, 60_000], durationMs: 2000 },
      burst: { atMs: [1000], count: 5 }
    })
    expect(parseFaults('')).toEqual({})
    fails(() => parseFaults('garbage=2'), 'garbage: "2" is not a probability from 0 to 1')
    fails(() => parseFaults('reboot=soon'), 'reboot: "soon" is not a duration')
    fails(() => parseFaults('silence=5s'), 'silence: "5s" is not <amount>/<every> or <amount>@<time>+<time>...')
    fails(() => parseFaults('burst=x/1s'), 'burst: "x" is not a number of reports')
    fails(() => parseFaults('flood=1'), 'unknown fault "flood" (garbage, truncate, badcrc, reboot, silence, burst, unplug)')
    fails(() => parseFaults('garbage'), '"garbage" is not <fault>=<value>')
  })
})

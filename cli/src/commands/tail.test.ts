import { describe, it, expect } from 'vitest'
import { AuthError, ConfigError, ErrorCode, RequestError, isValidName } from '@herald/protocol'
import { brokerUrl, defaultClientName, describeRefusal, humanLogLine, renderGap, resolveCredentials, startArg, tailTls } from './tail.js'

const noFile = (path: string): string => { throw new Error(`ENOENT: no such file, open '${path}'`) }

describe('resolveCredentials', () => {
  it('takes the password from HERALD_PASSWORD by default', () => {
    expect(resolveCredentials({ user: 'alice' }, { HERALD_PASSWORD: 'pw' }, noFile)).toEqual({ user: 'alice', password: 'pw' })
  })

  it('takes it from the variable --password-env names, or from a file without its trailing newline', () => {
    expect(resolveCredentials({ user: 'alice', passwordEnv: 'ALICE_PW' }, { ALICE_PW: 'a', HERALD_PASSWORD: 'b' }, noFile)).toEqual({ user: 'alice', password: 'a' })
    expect(resolveCredentials({ user: 'alice', passwordFile: '/run/pw' }, { HERALD_PASSWORD: 'b' }, () => 'from file\n')).toEqual({ user: 'alice', password: 'from file' })
    expect(resolveCredentials({ user: 'alice', passwordFile: '/run/pw' }, {}, () => 'crlf\r\n')).toEqual({ user: 'alice', password: 'crlf' })
  })

  it('connects a guest without credentials', () => {
    expect(resolveCredentials({ guest: true }, { HERALD_PASSWORD: 'ignored' }, noFile)).toEqual({})
  })

  it.each([
    [{}, {}, /give --user <name>.*or --guest/],
    [{ user: 'alice', guest: true }, {}, /either --user or --guest/],
    [{ guest: true, passwordEnv: 'X' }, {}, /a guest has no password/],
    [{ user: 'alice' }, {}, /no password for user "alice": set HERALD_PASSWORD/],
    [{ user: 'alice' }, { HERALD_PASSWORD: '' }, /no password for user "alice"/],
    [{ user: 'alice', passwordEnv: 'ALICE_PW' }, {}, /the environment variable ALICE_PW is not set/],
    [{ user: 'alice', passwordEnv: 'A', passwordFile: 'f' }, {}, /either --password-env or --password-file/],
    [{ user: 'alice', passwordFile: '/nope' }, {}, /cannot read the password file \/nope: ENOENT/]
  ])('refuses %o with a message saying what to do', (o, env, message) => {
    const err = (() => { try { resolveCredentials(o, env, noFile) } catch (e) { return e } })()
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toMatch(message)
  })

  it('refuses an empty password file', () => {
    expect(() => resolveCredentials({ user: 'alice', passwordFile: 'f' }, {}, () => '\n')).toThrow(/the password file f is empty/)
  })
})

describe('defaultClientName', () => {
  it('is a valid client name made of host and pid', () => {
    expect(defaultClientName('gw-7.example.com', 4242)).toBe('tail-gw-7.example.com-4242')
    expect(defaultClientName('my host_1', 1)).toBe('tail-my-host_1-1')
    expect(defaultClientName('--', 9)).toBe('tail-9')
    const long = defaultClientName('h'.repeat(200), 4_194_304)
    expect(isValidName(long)).toBe(true)
    expect(long).toMatch(/^tail-h+-4194304$/)
  })
})

describe('describeRefusal', () => {
  const ctx = { event: 'alarms', url: 'mqtt://b:1883', user: 'alice', atConnect: true }

  it('names the user and the broker for refused credentials', () => {
    const e = describeRefusal(new AuthError(ErrorCode.BAD_CREDENTIALS, 'the broker refused the credentials'), ctx)
    expect(e.code).toBe(ErrorCode.BAD_CREDENTIALS)
    expect(e.message).toBe('the broker at mqtt://b:1883 refused the credentials of user "alice": unknown user or wrong password')
  })

  it('names the event for a refused subscription, and keeps the broker\'s reason', () => {
    const e = describeRefusal(new RequestError(ErrorCode.UNKNOWN_EVENT, 'event "alarms" is not defined in the site'), { ...ctx, atConnect: false })
    expect(e.code).toBe(ErrorCode.UNKNOWN_EVENT)
    expect(e.message).toBe('cannot tail "alarms" as user "alice": event "alarms" is not defined in the site')
  })

  it('hints at the site for a refused guest', () => {
    const e = describeRefusal(new AuthError(ErrorCode.NOT_AUTHORIZED, 'the broker refused this identity'), { ...ctx, user: null })
    expect(e.message).toBe('the broker at mqtt://b:1883 refused a guest: the broker refused this identity (does the site admit guests?)')
  })
})

describe('humanLogLine', () => {
  it('shortens a pino line to level, message and fields', () => {
    expect(humanLogLine('{"level":40,"time":1,"msg":"starting over","key":"alarms","position":12}\n'))
      .toBe('herald tail: warn: starting over {"key":"alarms","position":12}')
    expect(humanLogLine('{"level":30,"msg":"hi"}')).toBe('herald tail: info: hi')
    expect(humanLogLine('not json\n')).toBe('herald tail: not json')
  })
})

describe('brokerUrl', () => {
  it('takes MQTT URLs and refuses anything else with an example', () => {
    expect(brokerUrl('mqtt://127.0.0.1:1883')).toBe('mqtt://127.0.0.1:1883')
    expect(brokerUrl('mqtts://broker.example:8883')).toBe('mqtts://broker.example:8883')
    expect(() => brokerUrl('localhost:1883')).toThrow(/is not a broker URL; one looks like mqtt:\/\/host:1883/)
    expect(() => brokerUrl('127.0.0.1:1883')).toThrow(/is not a URL/)
    expect(() => brokerUrl('foo')).toThrow(/"foo" is not a URL; a broker URL looks like mqtt:\/\/host:1883/)
    expect(() => brokerUrl('http://127.0.0.1:1883')).toThrow(/is not a broker URL/)
  })
})

describe('tailTls', () => {
  it('takes no TLS files without the flags, and refuses them with a plain URL or a certificate without its key', () => {
    expect(tailTls({ url: 'mqtts://broker.example:8883' })).toBeUndefined()
    expect(() => tailTls({ url: 'mqtt://127.0.0.1:1883', ca: 'ca.crt' })).toThrow(/--ca, --cert and --key are for TLS: use an mqtts:\/\/ URL, not mqtt:\/\/127\.0\.0\.1:1883/)
    expect(() => tailTls({ url: 'mqtts://127.0.0.1:8883', cert: 'client.crt' })).toThrow(/--cert and --key go together/)
    expect(() => tailTls({ url: 'mqtts://127.0.0.1:8883', ca: '/nonexistent/ca.crt' })).toThrow(/herald tail: cannot read the CA certificate file \/nonexistent\/ca\.crt/)
  })
})

describe('renderGap [CLI-GAP-3]', () => {
  const gap = { key: 'readings', event: 'readings', services: ['svc-a', 'svc-b'], missed: 40, exact: true, pushedOut: 38, expired: 2, after: 12, upTo: 60 }
  it('says what was missed, why, and where, on one line', () => {
    const line = renderGap(gap, { json: false, color: false, at: 0 })
    expect(line).toMatch(/^\d\d:\d\d:\d\d\.\d{3} \[gap\] readings from svc-a,svc-b: 40 events missed \(38 pushed out, 2 expired\) after #12, up to #60$/)
    expect(renderGap({ ...gap, exact: false, missed: 1, pushedOut: 1, expired: 0 }, { json: false, color: false, at: 0 })).toContain(': at least 1 event missed (1 pushed out) after')
  })
  it('with --json: one object under "gap", without the subscription key', () => {
    const { key: _key, ...fields } = gap
    expect(JSON.parse(renderGap(gap, { json: true, color: false, at: 0 }))).toEqual({ gap: fields })
  })
})

describe('startArg (--start) [CLI-START-2], [CLI-START-3]', () => {
  it('takes all, new, a position and an ISO time', () => {
    expect(startArg('all')).toBe('all')
    expect(startArg('new')).toBe('new')
    expect(startArg('latest')).toBe('latest')
    expect(startArg('1234')).toEqual({ position: 1234 })
    expect(startArg('2026-12-02T14:00:00Z')).toEqual({ time: Date.UTC(2026, 11, 2, 14) })
    expect(startArg('2026-12-02')).toEqual({ time: Date.UTC(2026, 11, 2) })
  })
  it('refuses anything else, saying what it takes', () => {
    for (const bad of ['oldest', '-1', '12a', '2026-13-45', '']) expect(() => startArg(bad)).toThrow(/give all, new, latest, a position .* or an ISO time/)
  })
})

/**
 * One command-line convention for every subcommand ([CMD-USAGE-1], README "Command line"): the real
 * `herald` binary, run as a user would. Usage errors exit 2 with commander's one line, an unknown
 * option is named (with a suggestion) even when a required option is missing too, help exits 0 and
 * marks the required options.
 */
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { tempDir } from '@herald/node-runtime/testing'
import { startBrokerProcess, writeTestSite } from './support/processes.js'

const CLI = join(import.meta.dirname, '..', 'cli', 'bin', 'herald.js')

function herald (...args: string[]): { code: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, HERALD_PASSWORD: '' } })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('herald command line', () => {
  it.each([
    [['nosuch'], "unknown command 'nosuch'"],
    [['broker'], "required option '--site <file>' not specified"],
    [['broker', '--site', 'a.yaml', '--data', 'd', '--port', '99999'], "option '--port <n>' argument '99999' is invalid"],
    [['tail', '--bogus', 'x'], "unknown option '--bogus'"],
    // [CLI-KEY-3] a replacing key is checked as the option is read
    [['tail', 'x', '--event-key', ''], "option '--event-key <key>' argument '' is invalid. a key must be 1 to 128 characters, got 0"],
    // durations carry their unit everywhere (sim --summary-every, tail --summary-every, --rto, ...)
    [['tail', 'x', '--summary-every', '5'], 'a duration with its unit, e.g. 5s or 500ms'],
    [['broker', '--site', 'a.yaml', '--data', 'd', '--slow-connection-timeout', '30'], 'a duration with its unit, e.g. 30s or 500ms'],
    [['sim', '--devices', 'door:1', '--summary-every', '5'], "option '--summary-every <duration>' argument '5' is invalid"],
    // [OPS-DASH-1] the dashboard is served on the metrics listener
    [['broker', '--site', 'a.yaml', '--data', 'd', '--dashboard'], '--dashboard needs --metrics-port'],
    [['broker', '--site', 'a.yaml', '--data', 'd', '--metrics-port', '0', '--dashboard-gateway', 'http://127.0.0.1:9101/metrics'], '--dashboard-gateway needs --dashboard'],
    [['broker', '--site', 'a.yaml', '--data', 'd', '--metrics-port', '0', '--dashboard', '--dashboard-gateway', 'notaurl'], "argument 'notaurl' is invalid. \"notaurl\" is not a URL"],
    // [PG-CLI-1] the store URL is checked as it is read
    [['broker', '--site', 'a.yaml', '--data', 'd', '--store', 'mysql://x'], "argument 'mysql://x' is invalid. \"mysql://x\" is not a postgres:// URL"],
    [['gateway'], "required option '--config <file>' not specified"],
    // [CLI-DEAD-7]
    [['dead-letters', 'list'], "required option '--positions <file>' not specified"],
    [['dead-letters', 'show', 'x', '--positions', 'p.db'], 'a dead letter id: a positive integer'],
    [['dead-letters', 'retry', '1', '--positions', 'no-such-file.db'], 'positions file no-such-file.db does not exist'],
    [['sim', '--devices'], "option '--devices <list>' argument missing"],
    [['demo', '--rate'], "option '--rate"],
    // herald bench hands its options to bench/run.mjs, which names a scenario it does not have
    [['bench', '--only', 's12'], 'unknown scenario "s12"']
  ])('herald %j is a usage error: exit 2 and one line saying what is wrong', (args, message) => {
    const r = herald(...args)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(message)
  })

  it('names an unknown option, with a suggestion, before a required option it may have been meant to be', () => {
    for (const [args, typo, meant] of [
      [['broker', '--sitee', 'site.yaml', '--data', 'd'], '--sitee', '--site'],
      [['broker', '--data', 'd', '--sitee=site.yaml'], '--sitee', '--site'],
      [['gateway', '--confg', 'gw.yaml'], '--confg', '--config']
    ] as const) {
      const r = herald(...args)
      expect(r.code).toBe(2)
      expect(r.stderr).toContain(`unknown option '${typo}'`)
      expect(r.stderr).toContain(`Did you mean ${meant}?`)
      expect(r.stderr).not.toContain('required option')
    }
  })

  it('help exits 0 and marks the required options', () => {
    const broker = herald('broker', '--help')
    expect(broker.code).toBe(0)
    expect(broker.stdout).toMatch(/--site <file> .*\(required\)/)
    expect(broker.stdout).toMatch(/--data <dir> .*\(required\)/)
    expect(broker.stdout).not.toMatch(/--port <n> .*\(required\)/)
    const gateway = herald('gateway', '--help')
    expect(gateway.code).toBe(0)
    expect(gateway.stdout).toMatch(/--config <file> .*\(required\)/)
    expect(herald('--help').code).toBe(0)
  })

  it('broker logs: short text lines with --log-format text, JSON lines by default when stdout is not a terminal', async () => {
    const dir = await tempDir('herald-cli-')
    try {
      const site = await writeTestSite(dir.path)
      const text = await startBrokerProcess(site, join(dir.path, 'a'), 0, ['--log-level', 'info', '--log-format', 'text'])
      await text.proc.waitLine((l) => l.startsWith('herald broker: info: broker listening {'), 20_000)
      await text.proc.kill()
      expect(text.proc.lines.filter((l) => l.startsWith('{'))).toEqual([])
      const json = await startBrokerProcess(site, join(dir.path, 'b'), 0, ['--log-level', 'info'])
      const listening = await json.proc.waitLine((l) => l.includes('"msg":"broker listening"'), 20_000)
      await json.proc.kill()
      expect(JSON.parse(listening)).toMatchObject({ level: 30, msg: 'broker listening' })
      expect(herald('broker', '--site', site, '--data', join(dir.path, 'c'), '--log-format', 'yaml').code).toBe(2)
    } finally {
      await dir.remove()
    }
  })
})

/**
 * `herald bench`: the benchmark (bench/run.mjs, docs/performance.md) as a subcommand. The benchmark
 * lives in a Herald checkout, not in the published cli package: outside one this says so, exit 2.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import { ConfigError } from '@herald/protocol'

/** bench/run.mjs of the checkout this cli was built in (cli/dist/commands → the repository root). */
export const BENCH_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'run.mjs')

interface BenchOptions { quick?: boolean, only?: string, cpuProf?: boolean, save: boolean }

/** The `herald bench` subcommand. */
export function benchCommand (): Command {
  return new Command('bench')
    .description('run the benchmark against Mosquitto and aedes (from a Herald checkout; docs/performance.md)')
    .option('--quick', 'small sizes, to check the harness (targets are not judged)')
    .option('--only <scenarios>', 'some scenarios, e.g. s1,s4 (s1 .. s7)')
    .option('--cpu-prof', 'also profile every Herald process into bench/results/profiles/<scenario>/')
    .option('--no-save', 'do not write bench/results/<date>.json')
    .action(async (opts: BenchOptions) => {
      if (!existsSync(BENCH_SCRIPT)) throw new ConfigError(`herald bench runs from a Herald checkout: ${BENCH_SCRIPT} is not there (the benchmark is not in the published package)`)
      const args = [
        ...(opts.quick === true ? ['--quick'] : []),
        ...(opts.only !== undefined ? ['--only', opts.only] : []),
        ...(opts.cpuProf === true ? ['--cpu-prof'] : []),
        ...(opts.save ? [] : ['--no-save'])
      ]
      const child = spawn(process.execPath, [BENCH_SCRIPT, ...args], { stdio: 'inherit' })
      // Ctrl-C reaches the benchmark too (same process group); it kills what it started
      const code = await new Promise<number>((resolve) => { child.once('exit', (c, signal) => { resolve(c ?? (signal !== null ? 130 : 1)) }) })
      process.exitCode = code
    })
}

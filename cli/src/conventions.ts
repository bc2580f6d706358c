/**
 * One command-line convention for every `herald` subcommand, whichever package defines it
 * ([CMD-USAGE-1], README "Command line"): help exits 0 and every usage error exits 2; an unknown
 * option is named (with commander's "did you mean") before a missing required one; required options
 * say so in `--help`.
 */
import { Help, type Command, type CommanderError, type Option } from 'commander'

/** Applies the convention to `program` and every command under it. */
export function applyCliConventions (program: Command): void {
  for (const cmd of walk(program)) {
    cmd.showHelpAfterError()
    cmd.configureHelp({
      optionDescription (option: Option): string {
        const text = Help.prototype.optionDescription.call(this, option)
        return option.mandatory ? `${text} (required)` : text
      }
    })
    // commander checks required options before unknown ones, so a typo (--sitee) was reported as the
    // missing option it was meant to be: name the unknown option first, with commander's suggestion
    const internals = cmd as unknown as CommandInternals
    const missing = internals.missingMandatoryOptionValue.bind(cmd)
    internals.missingMandatoryOptionValue = (option: Option): void => {
      const unknown = unknownOptionOf(cmd)
      if (unknown !== undefined) internals.unknownOption(unknown)
      missing(option)
    }
    cmd.exitOverride((err: CommanderError) => {
      process.exit(err.exitCode === 0 ? 0 : 2)
    })
  }
}

/** commander's error reporters, not in its typings. */
interface CommandInternals {
  missingMandatoryOptionValue: (option: Option) => void
  unknownOption: (flag: string) => never
}

/** The first option on the command line that `cmd` does not know, if any. */
function unknownOptionOf (cmd: Command): string | undefined {
  const known = new Set(['-h', '--help'])
  for (let c: Command | null = cmd; c !== null; c = c.parent) {
    for (const o of c.options) {
      if (o.long !== undefined) known.add(o.long)
      if (o.short !== undefined) known.add(o.short)
      // --no-x negates --x
      if (o.long?.startsWith('--no-') === true) known.add(`--${o.long.slice(5)}`)
    }
  }
  for (const a of argsOf(cmd)) {
    if (a === '--') return undefined
    const flag = a.split('=')[0] as string
    if (a.startsWith('-') && a !== '-' && !known.has(flag)) return flag
  }
  return undefined
}

function * walk (cmd: Command): Generator<Command> {
  yield cmd
  for (const sub of cmd.commands) yield * walk(sub)
}

/** The arguments after `cmd`'s own name on the command line (`herald broker --sitee x` → `--sitee x`). */
function argsOf (cmd: Command): string[] {
  const names: string[] = []
  for (let c: Command | null = cmd; c !== null && c.parent !== null; c = c.parent) names.unshift(c.name())
  const argv = process.argv.slice(2)
  let at = 0
  for (const name of names) {
    const i = argv.indexOf(name, at)
    if (i < 0) return []
    at = i + 1
  }
  return argv.slice(at)
}

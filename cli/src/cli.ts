#!/usr/bin/env node
/**
 * The `herald` command line. Each subcommand lives in `commands/` (or, for the device side, in its
 * own package); only the commands read the environment and create loggers.
 */
import { Command } from 'commander'
import { HeraldError } from '@herald/protocol'
import { gatewayCommand } from '@herald/gateway'
import { simCommand } from '@herald/firmware-sim'
import { benchCommand } from './commands/bench.js'
import { brokerCommand, hashSecretCommand } from './commands/broker.js'
import { deadLettersCommand } from './commands/dead-letters.js'
import { demoCommand } from './commands/demo.js'
import { raiseCommand } from './commands/raise.js'
import { tailCommand } from './commands/tail.js'
import { applyCliConventions } from './conventions.js'

const program = new Command('herald').description('Herald: device-to-broker events, exactly once')
program.addCommand(brokerCommand())
program.addCommand(hashSecretCommand())
program.addCommand(tailCommand())
program.addCommand(raiseCommand())
program.addCommand(deadLettersCommand())
program.addCommand(gatewayCommand())
program.addCommand(demoCommand())
program.addCommand(simCommand())
program.addCommand(benchCommand())
applyCliConventions(program)

program.parseAsync(process.argv).catch((err: unknown) => {
  const code = err instanceof HeraldError ? ` [${err.code}]` : ''
  process.stderr.write(`herald: ${(err as Error).message}${code}\n`)
  process.exit(2)
})

#!/usr/bin/env node
/**
 * The `herald` command line: `herald broker` runs a broker on a site file, a data directory and a
 * port; `herald hash-secret` makes a credential hash for the site file. Only this file reads the
 * environment and creates a logger.
 */
import { Command, InvalidArgumentError } from 'commander'
import { pino } from 'pino'
import { HashedSecret, HeraldError } from '@herald/shared'
import { startBrokerServer } from './server.js'

function port (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is a whole number from 0 to 65535')
  return n
}

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

const program = new Command('herald').description('Herald: device-to-broker events, exactly once').showHelpAfterError()

program.command('broker')
  .description('run a broker')
  .requiredOption('--site <file>', 'site structure file (YAML or JSON)')
  .requiredOption('--data <dir>', 'data directory for the event store (created if missing)')
  .option('--port <n>', 'TCP port (0: any free port)', port, 1883)
  .option('--host <address>', 'address to listen on', '127.0.0.1')
  .option('--log-level <level>', 'trace, debug, info, warn, error', process.env.HERALD_LOG_LEVEL ?? 'info')
  .action(async (opts: { site: string, data: string, port: number, host: string, logLevel: string }) => {
    const logger = pino({ level: opts.logLevel })
    const server = await startBrokerServer({ site: opts.site, dataDir: opts.data, port: opts.port, host: opts.host, logger })
    const { address, port: actual } = server.listener.address
    logger.info({ url: server.url, site: opts.site, data: opts.data, stored: server.broker.store.count() }, 'broker listening')
    // a line for scripts and tests to wait for, also when logs are JSON
    process.stdout.write(`herald broker listening on mqtt://${address}:${actual}\n`)
    let stopping = false
    const stop = (signal: string): void => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'stopping')
      server.close().then(() => { process.exit(0) }, (err: unknown) => {
        logger.error({ err }, 'error while stopping')
        process.exit(1)
      })
    }
    process.on('SIGINT', () => { stop('SIGINT') })
    process.on('SIGTERM', () => { stop('SIGTERM') })
  })

program.command('hash-secret')
  .description('print the scrypt hash of a secret read from standard input, for secretHash/passwordHash in a site file')
  .action(async () => {
    const secret = await readStdin()
    if (secret.length < 8) throw new InvalidArgumentError('a secret has at least 8 characters')
    process.stdout.write(`${(await HashedSecret.hash(secret)).encode()}\n`)
  })

program.parseAsync(process.argv).catch((err: unknown) => {
  const code = err instanceof HeraldError ? ` [${err.code}]` : ''
  process.stderr.write(`herald: ${(err as Error).message}${code}\n`)
  process.exit(2)
})

/**
 * `herald broker`: runs a broker on a site file, a data directory and a port, and `herald
 * hash-secret`: makes a credential hash for the site file.
 */
import { Command, InvalidArgumentError } from 'commander'
import { pino } from 'pino'
import { HashedSecret } from '@herald/shared'
import { startBrokerServer } from '@herald/broker'
import { defaultLogLevel, onShutdown, port } from './options.js'

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

/** A whole number of at least 0 (the broker checks each option's own range). */
function wholeNumber (value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('a whole number is expected')
  return n
}

export function brokerCommand (): Command {
  return new Command('broker')
    .description('run a broker')
    .requiredOption('--site <file>', 'site structure file (YAML or JSON)')
    .requiredOption('--data <dir>', 'data directory for the event store (created if missing)')
    .option('--port <n>', 'TCP port (0: any free port)', port, 1883)
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--log-level <level>', 'trace, debug, info, warn, error', defaultLogLevel)
    // [CONN-LIMIT-3]: behind a NAT or a proxy many endpoints share one source address
    .option('--max-connections-per-address <n>', 'most connections from one source address (default 1000)', wholeNumber)
    .option('--max-pending-connections-per-address <n>', 'most connections from one source address not yet logged in (default 100)', wholeNumber)
    .option('--max-guest-connections-per-address <n>', 'most guest connections from one source address (default 10)', wholeNumber)
    .option('--max-guest-connections <n>', 'most guest connections in all (default 1000)', wholeNumber)
    .action(async (opts: { site: string, data: string, port: number, host: string, logLevel: string, maxConnectionsPerAddress?: number, maxPendingConnectionsPerAddress?: number, maxGuestConnectionsPerAddress?: number, maxGuestConnections?: number }) => {
      const logger = pino({ level: opts.logLevel })
      const server = await startBrokerServer({
        site: opts.site, dataDir: opts.data, port: opts.port, host: opts.host, logger,
        ...(opts.maxConnectionsPerAddress !== undefined ? { maxConnectionsPerAddress: opts.maxConnectionsPerAddress } : {}),
        ...(opts.maxPendingConnectionsPerAddress !== undefined ? { maxPendingConnectionsPerAddress: opts.maxPendingConnectionsPerAddress } : {}),
        ...(opts.maxGuestConnectionsPerAddress !== undefined ? { maxGuestConnectionsPerAddress: opts.maxGuestConnectionsPerAddress } : {}),
        ...(opts.maxGuestConnections !== undefined ? { maxGuestConnections: opts.maxGuestConnections } : {})
      })
      const { address, port: actual } = server.listener.address
      logger.info({ url: server.url, site: opts.site, data: opts.data, stored: server.broker.store.count() }, 'broker listening')
      // a line for scripts and tests to wait for, also when logs are JSON
      process.stdout.write(`herald broker listening on mqtt://${address}:${actual}\n`)
      onShutdown(() => server.close(), (msg, err) => { logger.info({ err }, msg) })
    })
}

export function hashSecretCommand (): Command {
  return new Command('hash-secret')
    .description('print the scrypt hash of a secret read from standard input, for secretHash/passwordHash in a site file')
    .action(async () => {
      const secret = await readStdin()
      if (secret.length < 8) throw new InvalidArgumentError('a secret has at least 8 characters')
      process.stdout.write(`${(await HashedSecret.hash(secret)).encode()}\n`)
    })
}

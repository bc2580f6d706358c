/**
 * `herald broker`: runs a broker on a site file, a data directory and a port, and `herald
 * hash-secret`: makes a credential hash for the site file.
 */
import { Command, InvalidArgumentError } from 'commander'
import { pino } from 'pino'
import { HashedSecret } from '@herald/shared'
import { BROKER_DEFAULTS, startBrokerServer } from '@herald/broker'
import { defaultLogLevel, onShutdown, port } from './options.js'

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

/** A whole number of at least 0; createBroker checks the range and names the option. */
function wholeNumber (value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('a whole number is expected')
  return n
}

/** Back-pressure and guest limits ([CLI-BACKPRESSURE-1], [CLI-GUEST-1]): flag, option, help. */
const BACK_PRESSURE_FLAGS = [
  ['--max-connection-queued-bytes <n>', 'maxConnectionQueuedBytes', 'unsent bytes in a connection\'s socket above which it gets no events until it drains'],
  ['--max-connection-inflight-bytes <n>', 'maxConnectionInflightBytes', 'payload bytes in flight per client connection, across its subscriptions'],
  ['--slow-connection-timeout-ms <n>', 'slowConnectionTimeoutMs', 'close a connection that stays above its queued-bytes bound this long'],
  ['--guest-max-subscriptions <n>', 'guestMaxSubscriptions', 'subscriptions per guest connection'],
  ['--guest-max-window <n>', 'guestMaxWindow', 'largest window of a guest subscription, in events'],
  ['--guest-max-connection-inflight-bytes <n>', 'guestMaxConnectionInflightBytes', 'payload bytes in flight per guest connection'],
  ['--max-concurrent-reads <n>', 'maxConcurrentReads', 'event store reads for delivery under way at once']
] as const
type BackPressureOptions = Partial<Record<typeof BACK_PRESSURE_FLAGS[number][1], number>>

export function brokerCommand (): Command {
  const cmd = new Command('broker')
    .description('run a broker')
    .requiredOption('--site <file>', 'site structure file (YAML or JSON)')
    .requiredOption('--data <dir>', 'data directory for the event store (created if missing)')
    .option('--port <n>', 'TCP port (0: any free port)', port, 1883)
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--log-level <level>', 'trace, debug, info, warn, error', defaultLogLevel)
  for (const [flag, option, help] of BACK_PRESSURE_FLAGS) cmd.option(flag, `${help} (default ${BROKER_DEFAULTS[option]})`, wholeNumber)
  return cmd
    .action(async (opts: { site: string, data: string, port: number, host: string, logLevel: string } & BackPressureOptions) => {
      const logger = pino({ level: opts.logLevel })
      const limits: BackPressureOptions = {}
      for (const [, option] of BACK_PRESSURE_FLAGS) if (opts[option] !== undefined) limits[option] = opts[option]
      const server = await startBrokerServer({ site: opts.site, dataDir: opts.data, port: opts.port, host: opts.host, logger, ...limits })
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

/** Argument parsers and helpers shared by the `herald` subcommands. */
import { InvalidArgumentError } from 'commander'

/** Parses a TCP port: a whole number from 0 (any free port) to 65535. */
export function port (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is a whole number from 0 to 65535')
  return n
}

/** The log level from the environment, `info` if unset. */
export const defaultLogLevel = process.env.HERALD_LOG_LEVEL ?? 'info'

/**
 * Runs `stop` once on the first SIGINT or SIGTERM, then exits 0 (1 if stopping failed). A second
 * signal while stopping exits at once.
 */
export function onShutdown (stop: (signal: string) => Promise<void>, log: (msg: string, err?: unknown) => void): void {
  let stopping = false
  const handler = (signal: string): void => {
    if (stopping) process.exit(130)
    stopping = true
    log(`stopping (${signal})`)
    stop(signal).then(() => { process.exit(0) }, (err: unknown) => {
      log('error while stopping', err)
      process.exit(1)
    })
  }
  process.on('SIGINT', () => { handler('SIGINT') })
  process.on('SIGTERM', () => { handler('SIGTERM') })
}

/**
 * `herald gateway --config gateway.yaml`: runs a gateway until SIGINT/SIGTERM. Prints one line per
 * device line and the broker when it starts, then logs (JSON lines, or text on a terminal: --log-format) and a status every interval.
 */
import { Command, Option } from 'commander'
import { pino } from 'pino'
import { LOG_FORMATS, logDestination, type LogFormat } from '@herald/node-runtime'
import { loadGatewayConfig } from './config/gateway-config.js'
import { startGateway } from './gateway.js'

export function gatewayCommand (): Command {
  return new Command('gateway')
    .description('run a gateway: device lines in, events out (see docs/gateway.md)')
    .requiredOption('--config <file>', 'gateway configuration (YAML)')
    .option('--log-level <level>', 'trace, debug, info, warn, error', process.env.HERALD_LOG_LEVEL ?? 'info')
    .addOption(new Option('--log-format <format>', 'logs as JSON lines, or short text lines; auto: text on a terminal').choices(LOG_FORMATS).default('auto'))
    .action(async (opts: { config: string, logLevel: string, logFormat: LogFormat }) => {
      const config = await loadGatewayConfig(opts.config, process.env)
      const destination = logDestination(opts.logFormat, process.stdout, 'herald gateway')
      const logger = destination === undefined ? pino({ level: opts.logLevel }) : pino({ level: opts.logLevel }, destination)
      const gateway = await startGateway(config, { logger })
      process.stdout.write(`herald gateway ${config.serviceId} -> ${config.brokerUrl}, data in ${config.dataDir}\n`)
      for (const d of config.devices) process.stdout.write(`  device ${d.name}: ${d.url}\n`)
      let stopping = false
      const stop = (signal: string): void => {
        if (stopping) process.exit(130)
        stopping = true
        logger.info({ signal }, 'stopping')
        gateway.close().then(() => { process.exit(0) }, (err: unknown) => {
          logger.error({ err }, 'error while stopping')
          process.exit(1)
        })
      }
      process.on('SIGINT', () => { stop('SIGINT') })
      process.on('SIGTERM', () => { stop('SIGTERM') })
    })
}

/**
 * `herald gateway --config gateway.yaml`: runs a gateway until SIGINT/SIGTERM. Prints one line per
 * device line and the broker when it starts, then logs (JSON lines, or text on a terminal: --log-format) and a status every interval.
 */
import { Command, InvalidArgumentError, Option } from 'commander'
import { pino } from 'pino'
import { loadGatewayConfig } from './config/gateway-config.js'
import { LOG_FORMATS, logDestination, startMetricsServer, type LogFormat } from '@herald/node-runtime'
import { ConfigError } from '@herald/protocol'
import { startGateway } from './gateway.js'
import { gatewayMetricsRegistry, gatewayProblem } from './metrics.js'

/** A port number from 0 to 65535. */
function portNumber (value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0 || n > 65_535) throw new InvalidArgumentError('a port number from 0 to 65535 is expected')
  return n
}

export function gatewayCommand (): Command {
  return new Command('gateway')
    .description('run a gateway: device lines in, events out (see docs/gateway.md)')
    .requiredOption('--config <file>', 'gateway configuration (YAML)')
    .option('--log-level <level>', 'trace, debug, info, warn, error', process.env.HERALD_LOG_LEVEL ?? 'info')
    .addOption(new Option('--log-format <format>', 'logs as JSON lines, or short text lines; auto: text on a terminal').choices(LOG_FORMATS).default('auto'))
    .option('--metrics-port <n>', 'serve /metrics (Prometheus), /healthz and /readyz over plain HTTP on this port (0: any free port; overrides metrics.port in the file)', portNumber)
    .option('--metrics-host <address>', 'address of the metrics listener (default: metrics.host in the file, else 127.0.0.1)')
    .action(async (opts: { config: string, logLevel: string, logFormat: LogFormat, metricsPort?: number, metricsHost?: string }) => {
      const config = await loadGatewayConfig(opts.config, process.env)
      const destination = logDestination(opts.logFormat, process.stdout, 'herald gateway')
      const logger = destination === undefined ? pino({ level: opts.logLevel }) : pino({ level: opts.logLevel }, destination)
      const metricsPort = opts.metricsPort ?? config.metrics?.port
      const metricsHost = opts.metricsHost ?? config.metrics?.host ?? '127.0.0.1'
      if (metricsPort === undefined && opts.metricsHost !== undefined) throw new ConfigError('--metrics-host needs --metrics-port (or metrics.port in the configuration file)')
      const gateway = await startGateway(config, { logger })
      let metricsUrl: string | null = null
      let closeMetrics = async (): Promise<void> => {}
      if (metricsPort !== undefined) {
        const registry = gatewayMetricsRegistry(gateway)
        const server = await startMetricsServer({
          port: metricsPort,
          host: metricsHost,
          logger,
          metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
          ready: () => gatewayProblem(gateway)
        }).catch(async (err: unknown) => {
          await gateway.close()
          throw err
        })
        metricsUrl = server.url
        closeMetrics = () => server.close()
      }
      process.stdout.write(`herald gateway ${config.serviceId} -> ${config.brokerUrl}, data in ${config.dataDir}\n`)
      for (const d of config.devices) process.stdout.write(`  device ${d.name}: ${d.url}\n`)
      if (metricsUrl !== null) process.stdout.write(`herald gateway metrics on ${metricsUrl}/metrics\n`)
      let stopping = false
      const stop = (signal: string): void => {
        if (stopping) process.exit(130)
        stopping = true
        logger.info({ signal }, 'stopping')
        gateway.close().then(closeMetrics).then(() => { process.exit(0) }, (err: unknown) => {
          logger.error({ err }, 'error while stopping')
          process.exit(1)
        })
      }
      process.on('SIGINT', () => { stop('SIGINT') })
      process.on('SIGTERM', () => { stop('SIGTERM') })
    })
}

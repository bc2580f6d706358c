/** A broker on a site file, a data directory and a TCP port: what `herald broker` runs. */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { loadSite, silentLogger, type Logger, type Site } from '@herald/shared'
import { createBroker, type Broker, type BrokerOptions } from './broker.js'
import { createSqliteEventStore } from './event-store/sqlite-event-store.js'
import { listenTcp, type TcpListener } from './listeners/tcp-listener.js'

export interface BrokerServerOptions extends Omit<BrokerOptions, 'site' | 'store'> {
  /** A site file path, or an already loaded site. */
  readonly site: string | Site
  /** Directory of the SQLite event store (`events.db`), created if missing. */
  readonly dataDir: string
  /** TCP port; 0 picks a free one. */
  readonly port: number
  /** Default 127.0.0.1. */
  readonly host?: string
  readonly logger?: Logger
}

export interface BrokerServer {
  readonly broker: Broker
  readonly listener: TcpListener
  /** `mqtt://host:port` of the listener. */
  readonly url: string
  close (): Promise<void>
}

/** Loads the site, opens the SQLite store, creates the broker and listens on TCP. */
export async function startBrokerServer (options: BrokerServerOptions): Promise<BrokerServer> {
  const { site: siteOpt, dataDir, port, host, ...rest } = options
  const site = typeof siteOpt === 'string' ? await loadSite(siteOpt) : siteOpt
  await mkdir(dataDir, { recursive: true })
  const store = await createSqliteEventStore({
    path: join(dataDir, 'events.db'),
    limitsOf: (name) => site.events.get(name),
    logger: options.logger ?? silentLogger
  })
  const broker = await createBroker({ ...rest, site, store })
  const listener = await listenTcp(broker, { port, host: host ?? '127.0.0.1' })
  return {
    broker,
    listener,
    url: `mqtt://${listener.address.address}:${listener.address.port}`,
    async close () {
      await listener.close()
      await broker.close()
    }
  }
}

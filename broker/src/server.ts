/** A broker on a site file, a data directory and a TCP port: what `herald broker` runs. */
import type { Duplex } from 'node:stream'
import { join } from 'node:path'
import { ConfigError, ErrorCode, loadSite, silentLogger, type Logger, type Site } from '@herald/shared'
import { createBroker, type Broker, type BrokerOptions } from './broker.js'
import { lockDataDir, type DataDirLock } from './data-dir.js'
import { createSqliteEventStore } from './event-store/sqlite-event-store.js'
import { listenTcp, type TcpListener } from './listeners/tcp-listener.js'

export interface BrokerServerOptions extends Omit<BrokerOptions, 'site' | 'store'> {
  /** A site file path, or an already loaded site. */
  readonly site: string | Site
  /**
   * Directory of the SQLite event store (`events.db`), created 0700 if missing, its files 0600, and
   * locked by this broker until close() ([BROKER-DIR-1], [BROKER-LOCK-1]).
   */
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

/** The name of the event store's file in the data directory. */
export const EVENTS_FILE = 'events.db'

/**
 * Loads the site, takes the data directory, listens on TCP, opens the SQLite store and creates the
 * broker. In that order, so that a wrong site, a data directory another broker holds
 * (`DATA_DIR_LOCKED`) or a busy port (`ADDRESS_IN_USE`) fail before the store is opened; each step
 * that fails undoes the ones before. Connections that arrive while the store opens are closed (the
 * endpoints reconnect).
 */
export async function startBrokerServer (options: BrokerServerOptions): Promise<BrokerServer> {
  const { site: siteOpt, dataDir, port, host: hostOpt, ...rest } = options
  const host = hostOpt ?? '127.0.0.1'
  const logger = options.logger ?? silentLogger
  const site = typeof siteOpt === 'string' ? await loadSite(siteOpt) : siteOpt
  const lock: DataDirLock = await lockDataDir(dataDir, [EVENTS_FILE], logger)
  let listener: TcpListener | null = null
  try {
    let ready: Broker | null = null
    try {
      listener = await listenTcp({ handle: (stream: Duplex) => { if (ready === null) stream.destroy(); else ready.handle(stream) } }, { port, host })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new ConfigError(`port ${port} on ${host} is in use (another broker running?)`, { code: ErrorCode.ADDRESS_IN_USE, cause: err })
      }
      if ((err as NodeJS.ErrnoException).code === 'EACCES') {
        throw new ConfigError(`port ${port} on ${host}: not allowed to listen there (ports below 1024 need privileges)`, { cause: err })
      }
      throw err
    }
    const store = await createSqliteEventStore({
      path: join(dataDir, EVENTS_FILE),
      limitsOf: (name) => site.events.get(name),
      logger
    })
    let broker: Broker
    try {
      broker = await createBroker({ ...rest, site, store })
    } catch (err) {
      await store.close()
      throw err
    }
    ready = broker
    const l = listener
    return {
      broker,
      listener: l,
      url: `mqtt://${l.address.address}:${l.address.port}`,
      async close () {
        try {
          await l.close()
          await broker.close()
        } finally {
          lock.release()
        }
      }
    }
  } catch (err) {
    await listener?.close()
    lock.release()
    throw err
  }
}

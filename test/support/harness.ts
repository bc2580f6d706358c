/** In-process brokers and endpoints on real sockets, real SQLite files in temp dirs. */
import { join } from 'node:path'
import { startBrokerServer, type BrokerServer, type BrokerServerOptions } from '@herald/broker'
import { ClientEndpoint, SqlitePositionStore, type ClientEndpointOptions } from '@herald/client-endpoint'
import { ServiceEndpoint, createTwoLevelServicePersistence, type ServiceEndpointOptions, type TwoLevelServicePersistenceOptions } from '@herald/service-endpoint'
import { eventsOfService, type Clock } from '@herald/protocol'
import { tempDir } from '@herald/node-runtime/testing'
import { SECRETS, testSite } from './site.js'

/** Collects what a test creates and closes it all. */
export class Harness {
  private readonly closers: Array<() => Promise<void>> = []
  dir = ''

  static async create (): Promise<Harness> {
    const h = new Harness()
    const d = await tempDir('herald-e2e-')
    h.dir = d.path
    h.closers.push(d.remove)
    return h
  }

  /**
   * A broker on the test site, storing in `<dir>/<name>`, on `port` (0: any), serving TLS with `tls`,
   * and MQTT over WebSocket with `webSocket` (`{ port: 0 }`: its `webSocketUrl`).
   */
  async broker (options: { name?: string, port?: number, clock?: Clock, maxPacketBytes?: number, tls?: BrokerServerOptions['tls'], webSocket?: BrokerServerOptions['webSocket'] } = {}): Promise<BrokerServer> {
    const { name, port, ...rest } = options
    const server = await startBrokerServer({ ...rest, site: await testSite(), dataDir: join(this.dir, name ?? 'broker'), port: port ?? 0 })
    this.closers.push(() => server.close())
    return server
  }

  /** A service endpoint for `serviceId` with two-level persistence in `<dir>/<serviceId>.db`. */
  async service (url: string, serviceId: 'svc-a' | 'svc-b', options: Partial<ServiceEndpointOptions> & { memoryOnly?: boolean, level2?: Partial<TwoLevelServicePersistenceOptions> } = {}): Promise<ServiceEndpoint> {
    const site = await testSite()
    const { memoryOnly, level2, ...rest } = options
    const persistence = memoryOnly === true ? undefined : await createTwoLevelServicePersistence({ ...level2, path: join(this.dir, `${serviceId}.db`) })
    const ep = new ServiceEndpoint({
      url, serviceId, secret: SECRETS[serviceId], events: eventsOfService(site, serviceId),
      reconnectInitialMs: 20, reconnectMaxMs: 200,
      ...(persistence !== undefined ? { persistence } : {}),
      ...rest
    })
    this.closers.push(() => ep.close())
    return ep.start()
  }

  /** A client endpoint; `durable` keeps positions in `<dir>/<user>-<clientName>.positions.db`. */
  client (url: string, user: 'alice' | 'bob' | 'carol' | null, clientName: string, options: Partial<ClientEndpointOptions> & { durable?: boolean } = {}): ClientEndpoint {
    const { durable, ...rest } = options
    const ep = new ClientEndpoint({
      url, clientName,
      ...(user !== null ? { user, password: SECRETS[user] } : {}),
      reconnectInitialMs: 20, reconnectMaxMs: 200, retryInitialMs: 10, retryMaxMs: 100,
      ...(durable === true ? { positions: new SqlitePositionStore({ database: join(this.dir, `${user ?? 'guest'}-${clientName}.positions.db`) }) } : {}),
      ...rest
    })
    this.closers.push(() => ep.close())
    return ep.start()
  }

  /** Registers a cleanup step. */
  onClose (fn: () => Promise<void>): void {
    this.closers.push(fn)
  }

  async close (): Promise<void> {
    for (const c of this.closers.reverse()) {
      try {
        await c()
      } catch {
        // best effort: later closers still run
      }
    }
  }
}

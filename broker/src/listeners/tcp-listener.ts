/** TCP wiring for a broker ([CONN-TCP-1]); the broker core itself never opens a socket. */
import { createServer, type AddressInfo, type Socket } from 'node:net'
import type { Broker } from '../broker.js'

/** A listening TCP server feeding connections to a broker. */
export interface TcpListener {
  readonly address: AddressInfo
  /** Stops accepting connections and destroys the open ones. */
  close (): Promise<void>
}

/** Listens on `port` (0 for any free port) and hands each connection to `broker.handle`. */
export async function listenTcp (broker: Pick<Broker, 'handle'>, options: { port: number, host?: string }): Promise<TcpListener> {
  const sockets = new Set<Socket>()
  const server = createServer({ noDelay: true }, (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    broker.handle(socket)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host ?? '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  return {
    address: server.address() as AddressInfo,
    close: () => new Promise<void>((resolve) => {
      server.close(() => { resolve() })
      for (const s of sockets) s.destroy()
    })
  }
}

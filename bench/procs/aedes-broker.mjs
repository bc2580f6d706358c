// A plain in-memory aedes broker (the reference), in its own process. Prints {"url"} once listening.
import { createServer } from 'node:net'
import { Aedes } from 'aedes'
import { report } from './child.mjs'

const aedes = await Aedes.createBroker()
const server = createServer(aedes.handle)
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address()
  report({ url: `mqtt://127.0.0.1:${port}` })
})
process.on('SIGTERM', () => { server.close(); aedes.close(() => { process.exit(0) }) })

/** Free TCP ports on loopback, for a process that must come back on the same port after a kill. */
import { createServer } from 'node:net'

/** A port free on 127.0.0.1 right now (the OS picks it; another process could take it before use). */
export async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise<void>((resolve) => s.close(() => { resolve() }))
  return port
}

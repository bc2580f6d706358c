/**
 * [CLI-ORDER-1] A subscription's handler loop, against a scripted broker on a real socket: frames
 * that arrive in one chunk while a synchronous (transactional) handler loop finishes are all handled,
 * not left waiting for the next frame.
 */
import { createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { describe, it, expect, afterEach } from 'vitest'
import { ClientEndpoint } from '@herald/client-endpoint'
import { decodeRequest, encodeControl, encodeEvents, PayloadKind, type StoredEvent } from '@herald/shared'
import { tempDir, waitFor } from '@herald/shared/testing'
import mqtt from 'mqtt-packet'

function stored (position: number): StoredEvent {
  return {
    position, serviceId: 'svc', instance: 'inst', seq: position, name: 'log', category: 'queueing', isNull: false,
    payloadKind: PayloadKind.json, payload: Buffer.from(String(position)), raisedAt: 1, receivedAt: 1, expiresAt: null, uploadAge: 0, recipient: null
  }
}

describe('client handler loop', () => {
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.reverse()) await c().catch(() => {})
    closers.length = 0
  })

  it('handles every event of frames that arrive back to back in one chunk (transactional mode)', async () => {
    const sockets = new Set<Socket>()
    // a broker that answers the subscription with `subscribed` and three EVENTS frames in one write
    const server = createServer((socket) => {
      sockets.add(socket)
      const parser = mqtt.parser({ protocolVersion: 4 })
      let topic = ''
      socket.on('data', (d: Buffer) => { parser.parse(d) })
      socket.on('error', () => {})
      parser.on('packet', (p) => {
        if (p.cmd === 'connect') socket.write(mqtt.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }))
        if (p.cmd === 'subscribe') {
          topic = p.subscriptions[0]?.topic ?? ''
          socket.write(mqtt.generate({ cmd: 'suback', messageId: p.messageId ?? 0, granted: [0] }))
        }
        if (p.cmd === 'pingreq') socket.write(mqtt.generate({ cmd: 'pingresp' }))
        if (p.cmd === 'publish') {
          const req = decodeRequest(p.payload as Buffer)
          if (req.op !== 'sub') return
          const frames = [
            encodeControl({ op: 'subscribed', sub: req.sub, category: 'queueing', head: 0, reset: false }),
            encodeEvents(req.sub, 1, [stored(1), stored(2)]),
            encodeEvents(req.sub, 1, [stored(3)]),
            encodeEvents(req.sub, 1, [stored(4), stored(5)])
          ]
          socket.write(Buffer.concat(frames.map((f) => mqtt.generate({ cmd: 'publish', topic, payload: f, qos: 0, retain: false, dup: false }))))
        }
      })
    })
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    closers.push(() => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => { resolve() }) }))
    const { port } = server.address() as { port: number }

    const dir = await tempDir('herald-loop-')
    closers.push(dir.remove)
    const db = new Database(join(dir.path, 'app.db'))
    closers.push(async () => { db.close() })
    db.exec('CREATE TABLE effects (position INTEGER NOT NULL)')
    const insert = db.prepare('INSERT INTO effects (position) VALUES (?)')
    const ep = new ClientEndpoint({ url: `mqtt://127.0.0.1:${port}`, clientName: 'app', user: 'u', password: 'u-password' }).start()
    closers.push(() => ep.close())
    const handled: number[] = []
    await ep.subscribe('log', { transaction: db }, (e) => { insert.run(e.position); handled.push(e.position) })
    await waitFor(() => handled.length >= 5, 'five events handled', 5000)
    expect(handled).toEqual([1, 2, 3, 4, 5])
  })
})

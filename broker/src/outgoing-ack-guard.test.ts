/**
 * The guard on aedes' persistence (outgoing-ack-guard.ts), on the real aedes-persistence memory
 * store: a PUBACK of a client with nothing stored leaves nothing behind; stored messages are still
 * cleared by their PUBACK.
 */
import { describe, expect, it } from 'vitest'
import memoryPersistence from 'aedes-persistence'
import { guardOutgoingAcks, type OutgoingPersistence } from './outgoing-ack-guard.js'

type Store = OutgoingPersistence & {
  setup (broker: unknown): Promise<void>
  outgoingStream (client: { id: string }): AsyncIterable<{ messageId?: number }>
}

async function open (): Promise<Store> {
  const p = (memoryPersistence as unknown as () => Store)()
  await p.setup({ id: 'test-broker' })
  return p
}

const calls = (p: Store): { cleared: string[] } => {
  const seen = { cleared: [] as string[] }
  const clear = p.outgoingClearMessageId.bind(p)
  p.outgoingClearMessageId = (client, packet, cb) => {
    seen.cleared.push(client.id)
    return clear(client, packet, cb)
  }
  return seen
}

describe('guardOutgoingAcks', () => {
  it('answers the PUBACKs of client ids with nothing stored without reaching the store, callback and promise forms alike', async () => {
    const p = await open()
    const seen = calls(p)
    guardOutgoingAcks(p)
    for (let i = 0; i < 1000; i++) {
      expect(await (p.outgoingClearMessageId({ id: `mosquitto-sub-${i}` }, { cmd: 'puback', messageId: 1 }) as Promise<unknown>)).toBeUndefined()
    }
    const viaCallback = await new Promise((resolve, reject) => {
      p.outgoingClearMessageId({ id: 'cb-client' }, { cmd: 'puback', messageId: 7 }, (err, packet) => { if (err !== null) reject(err); else resolve(packet) })
    })
    expect(viaCallback).toBeUndefined()
    expect(seen.cleared).toEqual([])
  })

  it('a message aedes stored for a client is still cleared by its PUBACK', async () => {
    const p = await open()
    const stored = guardOutgoingAcks(p)
    const packet = { cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 1, retain: false, dup: false, brokerId: 'test-broker', brokerCounter: 1, messageId: 5 }
    await (p.outgoingEnqueue({ clientId: 'real' }, packet) as Promise<void>)
    await (p.outgoingUpdate({ id: 'real' }, packet) as Promise<void>)
    expect([...stored]).toEqual(['real'])
    const listed = async (): Promise<number> => {
      let n = 0
      for await (const _ of p.outgoingStream({ id: 'real' })) n++
      return n
    }
    expect(await listed()).toBe(1)
    const cleared = await (p.outgoingClearMessageId({ id: 'real' }, { cmd: 'puback', messageId: 5 }) as Promise<{ messageId: number } | undefined>)
    expect(cleared?.messageId).toBe(5)
    expect(await listed()).toBe(0)
  })
})

/** Proof 6: private events reach only their recipient, across reconnects. */
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import { SqlitePositionStore } from '@herald/client-endpoint'
import { AuthError, ErrorCode } from '@herald/protocol'
import { collect } from './support/collect.js'
import { Harness } from './support/harness.js'

describe('private events', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('reach only the client they are addressed to, and resume after a reconnect', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const svc = await h.service(broker.url, 'svc-a')
    for (let n = 0; n < 5; n++) await svc.raisePrivate('notices', 'alice/app', { to: 'alice/app', n })
    for (let n = 0; n < 3; n++) await svc.raisePrivate('notices', 'bob/app', { to: 'bob/app', n })
    await svc.raisePrivate('notices', 'alice/phone', { to: 'alice/phone', n: 0 })
    await svc.drained()

    const positions = join(h.dir, 'alice-app.db')
    const aliceApp = h.client(broker.url, 'alice', 'app', { positions: new SqlitePositionStore({ database: positions }) })
    const a = await collect(aliceApp, 'notices')
    const b = await collect(h.client(broker.url, 'bob', 'app'), 'notices')
    const phone = await collect(h.client(broker.url, 'alice', 'phone'), 'notices')
    const carol = await collect(h.client(broker.url, 'carol', 'app'), 'notices')
    await a.until(5)
    await b.until(3)
    await phone.until(1)
    expect(a.payloads()).toEqual([0, 1, 2, 3, 4].map((n) => ({ to: 'alice/app', n })))
    expect(a.events.every((e) => e.recipient === 'alice/app' && e.category === 'private')).toBe(true)
    expect(b.payloads()).toEqual([0, 1, 2].map((n) => ({ to: 'bob/app', n })))
    expect(phone.payloads()).toEqual([{ to: 'alice/phone', n: 0 }])

    // carol has nothing: one event for her, and it is the only one she ever gets
    await svc.raisePrivate('notices', 'carol/app', { to: 'carol/app', n: 0 })
    await carol.until(1)
    expect(carol.payloads()).toEqual([{ to: 'carol/app', n: 0 }])

    // alice/app goes away; more arrive for her; she comes back with her positions and gets only those
    await aliceApp.close()
    for (let n = 5; n < 8; n++) await svc.raisePrivate('notices', 'alice/app', { to: 'alice/app', n })
    await svc.drained()
    const back = await collect(h.client(broker.url, 'alice', 'app', { positions: new SqlitePositionStore({ database: positions }) }), 'notices')
    await back.until(3)
    await svc.raisePrivate('notices', 'alice/app', { to: 'alice/app', n: 8 })
    await back.until(4)
    expect(back.payloads()).toEqual([5, 6, 7, 8].map((n) => ({ to: 'alice/app', n })))
  })

  it('are not delivered to guests, who cannot prove who they are', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const guest = h.client(broker.url, null, 'kiosk')
    const err = await guest.subscribe('notices', {}, () => {}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(AuthError)
    expect((err as AuthError).code).toBe(ErrorCode.NOT_AUTHORIZED)
  })
})

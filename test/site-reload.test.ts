/**
 * Site changes without a restart ([SITE-RELOAD-1..7]): a real `herald broker` process, its site file
 * rewritten and SIGHUP sent, with real service and client endpoints on it.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { ClientEndpoint, type HeraldEvent } from '@herald/client-endpoint'
import { ServiceEndpoint } from '@herald/service-endpoint'
import { AuthError, ConfigError, ErrorCode, eventsOfService, type HeraldError } from '@herald/protocol'
import { startBrokerServer } from '@herald/broker'
import { waitFor } from '@herald/protocol/testing'
import { HashedSecret, parseSite } from '@herald/node-runtime'
import { tempDir } from '@herald/node-runtime/testing'
import { startBrokerProcess, type Proc } from './support/processes.js'

// stored hashes, so that a reload costs no scrypt per entry; the secret of every entry is its name + SUFFIX
const SUFFIX = '-secret-1'
const hashes = new Map<string, string>()
async function hashOf (name: string): Promise<string> {
  let h = hashes.get(name)
  if (h === undefined) hashes.set(name, h = (await HashedSecret.hash(name + SUFFIX)).encode())
  return h
}

interface Doc {
  guests: boolean
  events: Array<Record<string, unknown>>
  services: Array<{ id: string, events: string[] }>
  users: Array<{ name: string, roles: string[] }>
}
const baseDoc = (): Doc => ({
  guests: true,
  events: [
    { name: 'readings', category: 'queueing', lifetime: '1d', maxQueueSize: 100_000, access: 'authenticated' },
    { name: 'alarms', category: 'queueing', lifetime: '1d', access: { roles: ['operator'] } },
    { name: 'small', category: 'queueing', lifetime: '1d', maxQueueSize: 10, access: 'authenticated' },
    { name: 'status', category: 'replacing', access: 'everyone' }
  ],
  services: [
    { id: 'svc-a', events: ['readings', 'alarms', 'small', 'status'] },
    { id: 'svc-b', events: ['readings'] }
  ],
  users: [
    { name: 'alice', roles: ['operator'] },
    { name: 'bob', roles: [] },
    { name: 'carol', roles: [] }
  ]
})

async function siteText (doc: Doc): Promise<string> {
  return JSON.stringify({
    ...doc,
    services: await Promise.all(doc.services.map(async (s) => ({ ...s, secretHash: await hashOf(s.id) }))),
    users: await Promise.all(doc.users.map(async (u) => ({ ...u, passwordHash: await hashOf(u.name) })))
  })
}

const isReloadLine = (l: string): boolean => l.includes('site reloaded') || l.includes('site not reloaded')

class Fixture {
  readonly closers: Array<() => Promise<void>> = []
  dir = ''
  sitePath = ''
  broker!: { proc: Proc, url: string }

  static async start (doc: Doc, extraArgs: readonly string[] = []): Promise<Fixture> {
    const f = new Fixture()
    const d = await tempDir('herald-reload-')
    f.closers.push(d.remove)
    f.dir = d.path
    f.sitePath = join(f.dir, 'site.json')
    await writeFile(f.sitePath, await siteText(doc))
    f.broker = await startBrokerProcess(f.sitePath, join(f.dir, 'data'), 0, ['--log-level', 'info', '--log-format', 'json', ...extraArgs])
    f.closers.push(() => f.broker.proc.kill())
    return f
  }

  /** Writes the site file (a Doc, or raw text), sends SIGHUP, and returns the reload's log line (parsed). */
  async reload (doc: Doc | string): Promise<{ level: number, msg: string, err?: string, change?: unknown }> {
    await writeFile(this.sitePath, typeof doc === 'string' ? doc : await siteText(doc))
    const before = this.broker.proc.lines.length
    this.broker.proc.child.kill('SIGHUP')
    await waitFor(() => this.broker.proc.lines.slice(before).some(isReloadLine), 'the reload\'s log line')
    return JSON.parse(this.broker.proc.lines.slice(before).find(isReloadLine) as string) as { level: number, msg: string, err?: string, change?: unknown }
  }

  async service (id: string, doc: Doc, secret = id + SUFFIX): Promise<ServiceEndpoint> {
    const site = await parseSite(JSON.parse(await siteText(doc)))
    const ep = new ServiceEndpoint({ url: this.broker.url, serviceId: id, secret, events: eventsOfService(site, id), reconnectInitialMs: 20, reconnectMaxMs: 200 })
    this.closers.push(() => ep.close())
    return ep.start()
  }

  client (user: string | null, clientName: string): ClientEndpoint {
    const ep = new ClientEndpoint({
      url: this.broker.url, clientName, ...(user !== null ? { user, password: user + SUFFIX } : {}), reconnectInitialMs: 20, reconnectMaxMs: 200
    })
    this.closers.push(() => ep.close())
    return ep.start()
  }

  alive (): boolean {
    return this.broker.proc.child.exitCode === null && this.broker.proc.child.signalCode === null
  }

  async close (): Promise<void> {
    for (const c of this.closers.reverse()) {
      try { await c() } catch { /* best effort */ }
    }
  }
}

/** Collects a subscription's payload ids in arrival order. */
function collector (): { ids: number[], handler: (e: HeraldEvent) => void } {
  const ids: number[] = []
  return { ids, handler: (e) => { ids.push((e.payload as { i: number }).i) } }
}

describe('site reload (SIGHUP on herald broker)', () => {
  let f: Fixture
  afterEach(async () => { await f.close() })

  it('(a) an added user and service log in and work; the log line says what changed', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    // before: dave is refused
    const early = f.client('dave', 'early')
    const refusals: HeraldError[] = []
    early.on('error', (e) => { refusals.push(e) })
    await waitFor(() => refusals.length > 0, 'dave refused before the reload')
    expect(refusals[0]?.code).toBe(ErrorCode.BAD_CREDENTIALS)
    await early.close()

    doc.events.push({ name: 'door', category: 'queueing', lifetime: '1h', access: 'authenticated' })
    doc.services.push({ id: 'svc-new', events: ['door'] })
    doc.users.push({ name: 'dave', roles: [] })
    const line = await f.reload(doc)
    expect(line.level).toBe(30)
    expect(line.msg).toBe('site reloaded: events added: door; services added: svc-new; users added: dave')
    expect(line.change).toMatchObject({ users: { added: ['dave'] }, services: { added: ['svc-new'] }, events: { added: ['door'] } })

    const svc = await f.service('svc-new', doc)
    const dave = f.client('dave', 'app')
    const got = collector()
    await dave.subscribe('door', {}, got.handler)
    for (let i = 0; i < 3; i++) await svc.raise('door', { i })
    await waitFor(() => got.ids.length === 3, 'dave receives the new service\'s events')
    expect(got.ids).toEqual([0, 1, 2])
  })

  it('(b) a removed user and service: their live connections close and they cannot log in again', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    const svcB = await f.service('svc-b', doc)
    const bob = f.client('bob', 'app')
    const bobErrors: HeraldError[] = []
    const svcErrors: HeraldError[] = []
    bob.on('error', (e) => { bobErrors.push(e) })
    svcB.on('error', (e) => { svcErrors.push(e) })
    const got = collector()
    await bob.subscribe('readings', {}, got.handler)
    await svcB.raise('readings', { i: 1 })
    await waitFor(() => got.ids.length === 1 && svcB.status.backlog === 0, 'bob receives svc-b\'s event')
    // alice stays: her connection must not be touched
    const alice = f.client('alice', 'app')
    const aliceGot = collector()
    await alice.subscribe('readings', {}, aliceGot.handler)
    await waitFor(() => aliceGot.ids.length === 1, 'alice receives')
    let aliceOffline = 0
    alice.on('status', (s) => { if (s.state === 'offline') aliceOffline++ })

    const next = baseDoc()
    next.users = next.users.filter((u) => u.name !== 'bob')
    next.services = next.services.filter((s) => s.id !== 'svc-b')
    const line = await f.reload(next)
    expect(line.msg).toBe('site reloaded: services removed: svc-b; users removed: bob')
    // closed, and refused at every attempt after
    await waitFor(() => bobErrors.some((e) => e instanceof AuthError && e.code === ErrorCode.BAD_CREDENTIALS), 'bob refused after the reload')
    await waitFor(() => svcErrors.some((e) => e instanceof AuthError && e.code === ErrorCode.BAD_CREDENTIALS), 'svc-b refused after the reload')
    expect(bob.status.state).not.toBe('online')
    expect(svcB.status.state).not.toBe('online')
    await svcB.raise('readings', { i: 2 })
    const svcA = await f.service('svc-a', next)
    await svcA.raise('readings', { i: 3 })
    await waitFor(() => aliceGot.ids.length === 2, 'alice receives svc-a\'s event')
    expect(aliceGot.ids).toEqual([1, 3])
    expect(got.ids).toEqual([1])
    expect(svcB.status.backlog).toBe(1) // kept by the service, not lost: it was never acknowledged
    expect(aliceOffline).toBe(0)
  })

  it('(c) roles changed: a live subscription to a now-forbidden event ends with a typed error; a refused one is delivered once granted', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    const svc = await f.service('svc-a', doc)
    const alice = f.client('alice', 'app')
    const carol = f.client('carol', 'app')
    const aliceErrors: Array<{ key: string, error: HeraldError }> = []
    const carolErrors: Array<{ key: string, error: HeraldError }> = []
    alice.on('subscriptionError', (info) => { aliceErrors.push(info) })
    carol.on('subscriptionError', (info) => { carolErrors.push(info) })
    const aliceGot = collector()
    const carolGot = collector()
    const aliceSub = await alice.subscribe('alarms', {}, aliceGot.handler)
    // without waitForAccess a refusal rejects, as before
    await expect(carol.subscribe('alarms', { key: 'plain' }, () => {})).rejects.toMatchObject({ code: ErrorCode.NOT_AUTHORIZED })
    const carolSub = await carol.subscribe('alarms', { waitForAccess: true }, carolGot.handler)
    expect(carolSub.waitingForAccess).toBe(true)
    expect(carolErrors.map((e) => [e.key, e.error.code])).toEqual([['alarms', ErrorCode.NOT_AUTHORIZED]])
    expect(carolErrors[0]?.error.message).toContain('"alarms"')
    await svc.raise('alarms', { i: 1 })
    await waitFor(() => aliceGot.ids.length === 1, 'alice receives the first alarm')

    const next = baseDoc()
    next.users = [{ name: 'alice', roles: [] }, { name: 'bob', roles: [] }, { name: 'carol', roles: ['operator'] }]
    const line = await f.reload(next)
    expect(line.msg).toBe('site reloaded: users changed: alice, carol')
    await waitFor(() => aliceErrors.length === 1, 'alice told her subscription ended')
    expect(aliceErrors[0]?.key).toBe('alarms')
    expect(aliceErrors[0]?.error.code).toBe(ErrorCode.NOT_AUTHORIZED)
    expect(aliceErrors[0]?.error.message).toContain('"alarms"')
    expect(aliceSub.waitingForAccess).toBe(true)
    // carol gets what is stored and what comes; alice nothing more
    await waitFor(() => carolGot.ids.length === 1, 'carol receives the stored alarm once granted')
    expect(carolSub.waitingForAccess).toBe(false)
    await svc.raise('alarms', { i: 2 })
    await waitFor(() => carolGot.ids.length === 2, 'carol receives the new alarm')
    expect(carolGot.ids).toEqual([1, 2])
    expect(aliceGot.ids).toEqual([1])
    // the roles change kept both connections: no refusal, subscriptions to other events go on
    expect(alice.status.state).toBe('online')

    // and back: alice granted again gets what she missed, from her position, nothing twice
    const line2 = await f.reload(baseDoc())
    expect(line2.msg).toBe('site reloaded: users changed: alice, carol')
    await waitFor(() => aliceGot.ids.length === 2, 'alice receives the alarm she missed')
    expect(aliceGot.ids).toEqual([1, 2])
    await waitFor(() => carolErrors.length === 2, 'carol told her access was withdrawn')
  })

  it('(d) a file with a syntax error or an invalid entry changes nothing; the broker runs on the old site', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    const withDave = baseDoc()
    withDave.users.push({ name: 'dave', roles: [] })
    const broken = (await siteText(withDave)).slice(0, -5)
    const line = await f.reload(broken)
    expect(line.level).toBe(50)
    expect(line.msg).toBe('site not reloaded; the broker goes on with the previous site')
    expect(line.err).toMatch(/site file .*site\.json: not valid JSON \(line 1, column \d+\)/)
    const invalid = baseDoc()
    invalid.users.push({ name: 'dave', roles: [] })
    invalid.events.push({ name: 'bad', category: 'sometimes' })
    const line2 = await f.reload(invalid)
    expect(line2.level).toBe(50)
    expect(line2.err).toContain('events[4] (bad): category "sometimes" must be one of replacing, queueing, private')
    expect(f.alive()).toBe(true)
    // old users log in, dave does not
    const alice = f.client('alice', 'app')
    await waitFor(() => alice.status.state === 'online', 'alice logs in')
    const dave = f.client('dave', 'app')
    const errs: HeraldError[] = []
    dave.on('error', (e) => { errs.push(e) })
    await waitFor(() => errs.length > 0, 'dave refused')
    expect(errs[0]?.code).toBe(ErrorCode.BAD_CREDENTIALS)
  })

  it('(e) a category change is refused as a whole: nothing else in that file applies', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    const next = baseDoc()
    next.events[0] = { name: 'readings', category: 'private', lifetime: '1d' }
    next.users.push({ name: 'dave', roles: [] })
    next.users = next.users.filter((u) => u.name !== 'bob')
    const line = await f.reload(next)
    expect(line.level).toBe(50)
    expect(line.err).toBe('site reload refused, nothing changed: event "readings": its category changed from queueing to private; stored events and subscriptions are queueing (give the new definition a new name)')
    const dave = f.client('dave', 'app')
    const errs: HeraldError[] = []
    dave.on('error', (e) => { errs.push(e) })
    await waitFor(() => errs.length > 0, 'dave refused')
    const bob = f.client('bob', 'app')
    const got = collector()
    await bob.subscribe('readings', {}, got.handler)
    const svc = await f.service('svc-a', doc)
    await svc.raise('readings', { i: 7 })
    await waitFor(() => got.ids.length === 1, 'bob still receives readings as a queueing event')
    expect(f.alive()).toBe(true)
  })

  it('(f) a smaller queue is trimmed at the next append; removing an event with stored events is refused; a service loses an event', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    const svc = await f.service('svc-a', doc)
    for (let i = 0; i < 10; i++) await svc.raise('small', { i })
    await svc.raise('alarms', { i: 0 })
    await waitFor(() => svc.status.backlog === 0, 'all acknowledged')
    const rejected: Array<{ name: string | undefined, code: string }> = []
    svc.on('rejected', (info) => { rejected.push({ name: info.name, code: info.error.code }) })

    // removing alarms while the store holds one: refused, naming it
    const removing = baseDoc()
    removing.events = removing.events.filter((e) => e.name !== 'alarms')
    removing.services = [{ id: 'svc-a', events: ['readings', 'small', 'status'] }, { id: 'svc-b', events: ['readings'] }]
    const refused = await f.reload(removing)
    expect(refused.level).toBe(50)
    expect(refused.err).toBe('site reload refused, nothing changed: event "alarms": it was removed, but the store holds 1 event of it (wait until they expire and are purged, or keep the event)')

    // a smaller queue and svc-a no longer raising alarms: applied
    const next = baseDoc()
    next.events[2] = { name: 'small', category: 'queueing', lifetime: '1d', maxQueueSize: 3, access: 'authenticated' }
    next.services[0] = { id: 'svc-a', events: ['readings', 'small', 'status'] }
    const line = await f.reload(next)
    expect(line.msg).toBe('site reloaded: events changed: small; services changed: svc-a')
    // stored events stay until the next append to that queue ...
    const before = collector()
    const bob = f.client('bob', 'before')
    await bob.subscribe('small', {}, before.handler)
    await waitFor(() => before.ids.length === 10, 'all ten still stored')
    await bob.close()
    // ... which trims it to the new size
    await svc.raise('small', { i: 10 })
    await svc.raise('alarms', { i: 1 })
    await waitFor(() => svc.status.backlog === 0, 'acknowledged (one rejected)')
    const after = collector()
    const carol = f.client('carol', 'after')
    await carol.subscribe('small', {}, after.handler)
    await waitFor(() => after.ids.length === 3, 'three kept')
    expect(after.ids).toEqual([8, 9, 10])
    // the alarm raised after the reload is refused as for any event outside the service's list
    expect(rejected).toEqual([{ name: 'alarms', code: ErrorCode.NOT_AUTHORIZED }])
  })

  it('(h) plain MQTT subscribers follow a reload: a role granted starts the event, a removed user is disconnected ([PLAIN-VIEW-5])', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    const svc = await f.service('svc-a', doc)
    const got: string[] = []
    const bob = await mqtt.connectAsync(f.broker.url, { clientId: 'bob-explorer', username: 'bob', password: 'bob' + SUFFIX, protocolVersion: 4, reconnectPeriod: 0 })
    f.closers.push(async () => { await bob.endAsync(true) })
    bob.on('message', (topic, payload) => { got.push(`${topic} ${JSON.stringify((JSON.parse(payload.toString()) as { payload: unknown }).payload)}`) })
    await bob.subscribeAsync('herald/v1/events/#', { qos: 1 })
    await svc.raise('alarms', { i: 1 })
    await svc.raise('readings', { i: 2 })
    await waitFor(() => got.length === 1, 'bob gets the readings, not the alarm')
    expect(got).toEqual(['herald/v1/events/readings/svc-a {"i":2}'])
    const granted = baseDoc()
    granted.users = granted.users.map((u) => u.name === 'bob' ? { ...u, roles: ['operator'] } : u)
    expect((await f.reload(granted)).msg).toContain('users changed: bob')
    await svc.raise('alarms', { i: 3 })
    await waitFor(() => got.length === 2, 'bob gets the alarm raised after the grant')
    expect(got[1]).toBe('herald/v1/events/alarms/svc-a {"i":3}')
    const removed = baseDoc()
    removed.users = removed.users.filter((u) => u.name !== 'bob')
    const closed = new Promise<void>((resolve) => { bob.once('close', () => { resolve() }) })
    await f.reload(removed)
    await closed
    await svc.raise('alarms', { i: 4 })
    expect(got).toHaveLength(2)
  })

  it('(i) the --ws-demo-page event list follows a reload ([CONN-WSC-7])', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc, ['--ws-port', '0', '--ws-demo-page'])
    const line = await f.broker.proc.waitLine((l) => l.startsWith('herald broker demo page on '))
    const page = line.slice('herald broker demo page on '.length).trim()
    const events = async (): Promise<string[]> => ((await (await fetch(new URL('demo-config.json', page))).json()) as { events: string[] }).events
    expect(await events()).toEqual(['readings', 'alarms', 'small', 'status'])
    doc.events.push({ name: 'door', category: 'queueing', lifetime: '1h', access: 'authenticated' })
    expect((await f.reload(doc)).msg).toContain('events added: door')
    expect(await events()).toEqual(['readings', 'alarms', 'small', 'status', 'door'])
  })

  it('(g) reloads while events flow lose nothing and duplicate nothing', async () => {
    const doc = baseDoc()
    f = await Fixture.start(doc)
    const svc = await f.service('svc-a', doc)
    const alice = f.client('alice', 'app')
    const got = collector()
    await alice.subscribe('readings', {}, got.handler)
    const total = 2000
    const raising = (async () => {
      for (let i = 0; i < total; i++) await svc.raise('readings', { i })
    })()
    // alternate between two sites that differ in users and roles, not in what alice may receive
    for (let r = 0; r < 6; r++) {
      const next = baseDoc()
      if (r % 2 === 0) {
        next.users.push({ name: `temp${r}`, roles: ['x'] })
        next.users[1] = { name: 'bob', roles: ['operator'] }
      }
      const line = await f.reload(next)
      expect(line.level).toBe(30)
      await waitFor(() => got.ids.length > (r + 1) * total / 10 || got.ids.length === total, 'events flowing between reloads')
    }
    await raising
    await waitFor(() => got.ids.length >= total && svc.status.backlog === 0, 'all events delivered')
    expect(got.ids).toEqual(Array.from({ length: total }, (_, i) => i))
  })
})

describe('server.reloadSite() (what SIGHUP and the admin route call)', () => {
  const closers: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) {
      try { await c() } catch { /* best effort */ }
    }
  })

  async function serve (doc: Doc, asObject = false, options: { maxConcurrentLoginChecks?: number } = {}): Promise<{ server: Awaited<ReturnType<typeof startBrokerServer>>, sitePath: string }> {
    const d = await tempDir('herald-reload-')
    closers.push(d.remove)
    const sitePath = join(d.path, 'site.json')
    await writeFile(sitePath, await siteText(doc))
    const server = await startBrokerServer({ site: asObject ? await parseSite(JSON.parse(await siteText(doc))) : sitePath, dataDir: join(d.path, 'data'), port: 0, ...options })
    closers.push(() => server.close())
    return { server, sitePath }
  }
  function client (url: string, user: string | null, clientName: string, password?: string): ClientEndpoint {
    const ep = new ClientEndpoint({ url, clientName, ...(user !== null ? { user, password: password ?? user + SUFFIX } : {}), reconnectInitialMs: 20, reconnectMaxMs: 200 })
    closers.push(() => ep.close())
    return ep.start()
  }

  it('resolves to a JSON report, rejects a bad file with SITE_INVALID, and runs reloads one at a time', async () => {
    const { server, sitePath } = await serve(baseDoc())
    const same = await server.reloadSite()
    expect(same.changed).toBe(false)
    const next = baseDoc()
    next.users.push({ name: 'dave', roles: [] })
    await writeFile(sitePath, await siteText(next))
    // two at once: both see the file, the second finds nothing more to change
    const [r1, r2] = await Promise.all([server.reloadSite(), server.reloadSite()])
    expect(r1.users.added).toEqual(['dave'])
    expect(r2.changed).toBe(false)
    expect(JSON.parse(JSON.stringify(r1))).toEqual(r1)
    await writeFile(sitePath, '{ "events": [')
    const err = await server.reloadSite().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).code).toBe(ErrorCode.SITE_INVALID)
    expect(server.broker.site.users.has('dave')).toBe(true)
  })

  it('the dashboard\'s POST /admin/reload-site runs the same reload: 200 with the report, 400 naming a bad file ([OPS-DASH-8])', async () => {
    const doc = { ...baseDoc(), admin: { roles: ['operator'] } }
    const d = await tempDir('herald-reload-')
    closers.push(d.remove)
    const sitePath = join(d.path, 'site.json')
    await writeFile(sitePath, await siteText(doc))
    const server = await startBrokerServer({ site: sitePath, dataDir: join(d.path, 'data'), port: 0, metrics: { port: 0 }, dashboard: {} })
    closers.push(() => server.close())
    const origin = server.metricsUrl as string
    const post = (path: string, body: unknown, cookie = ''): Promise<Response> =>
      fetch(`${origin}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', origin, ...(cookie !== '' ? { cookie } : {}) }, body: JSON.stringify(body) })
    const login = await post('/admin/login', { user: 'alice', password: 'alice' + SUFFIX })
    expect(login.status).toBe(200)
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string
    const next = { ...doc, users: [...doc.users, { name: 'dave', roles: [] }] }
    await writeFile(sitePath, await siteText(next))
    const ok = await post('/admin/reload-site', {}, cookie)
    expect(ok.status).toBe(200)
    expect(((await ok.json()) as { users: { added: string[] } }).users.added).toEqual(['dave'])
    expect(server.broker.site.users.has('dave')).toBe(true)
    await writeFile(sitePath, '{ "events": [')
    const bad = await post('/admin/reload-site', {}, cookie)
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: string }).error).toMatch(/not valid JSON/)
    expect(server.broker.site.users.has('dave')).toBe(true)
  })

  it('a broker started with a Site object has no file to reload: a ConfigError', async () => {
    const { server } = await serve(baseDoc(), true)
    await expect(server.reloadSite()).rejects.toThrow(/started with a site object/)
  })

  it('guests turned off closes guest connections; a changed password disconnects its user, and only the new one logs in', async () => {
    const { server, sitePath } = await serve(baseDoc())
    const guest = client(server.url, null, 'kiosk')
    const carol = client(server.url, 'carol', 'app')
    const alice = client(server.url, 'alice', 'app')
    await waitFor(() => guest.status.state === 'online' && carol.status.state === 'online' && alice.status.state === 'online', 'all online')
    const guestErrors: HeraldError[] = []
    const carolErrors: HeraldError[] = []
    guest.on('error', (e) => { guestErrors.push(e) })
    carol.on('error', (e) => { carolErrors.push(e) })
    let aliceOffline = 0
    alice.on('status', (s) => { if (s.state === 'offline') aliceOffline++ })
    const next = baseDoc()
    next.guests = false
    hashes.set('carol', (await HashedSecret.hash('carol-new-secret')).encode())
    await writeFile(sitePath, await siteText(next))
    const report = await server.reloadSite()
    expect(report).toMatchObject({ guests: false, users: { changed: ['carol'] } })
    await waitFor(() => guestErrors.some((e) => e.code === ErrorCode.NOT_AUTHORIZED), 'the guest refused after the reload')
    await waitFor(() => carolErrors.some((e) => e.code === ErrorCode.BAD_CREDENTIALS), 'carol with the old password refused')
    const carol2 = client(server.url, 'carol', 'app2', 'carol-new-secret')
    await waitFor(() => carol2.status.state === 'online', 'carol with the new password logs in')
    expect(alice.status.state).toBe('online')
    expect(aliceOffline).toBe(0)
    hashes.delete('carol')
  })

  it('a login whose secret check was under way when the reload removed its user is refused ([SITE-RELOAD-3])', async () => {
    const { server } = await serve(baseDoc(), false, { maxConcurrentLoginChecks: 1 })
    const next = baseDoc()
    next.users = next.users.filter((u) => u.name !== 'bob')
    const nextSite = await parseSite(JSON.parse(await siteText(next)))
    const bobs = [0, 1, 2].map((i) => client(server.url, 'bob', `app${i}`))
    const errors = bobs.map(() => [] as HeraldError[])
    bobs.forEach((b, i) => { b.on('error', (e) => { errors[i]?.push(e) }) })
    // a check started under the old site and not yet finished
    const l = (): { checks: number, succeeded: number, failed: number } => server.broker.stats().logins
    await waitFor(() => l().checks > l().succeeded + l().failed, 'a secret check under way', 20_000, 1)
    server.broker.reloadSite(nextSite)
    await waitFor(() => errors.every((e) => e.some((x) => x.code === ErrorCode.BAD_CREDENTIALS)), 'every bob refused')
    expect(bobs.map((b) => b.status.state)).not.toContain('online')
    expect(server.broker.stats().connectionsByKind.client).toBe(0)
  })
})

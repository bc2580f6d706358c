/** The difference between two sites, and what a reload refuses ([SITE-RELOAD-1..5]). */
import { describe, expect, it } from 'vitest'
import { ConfigError, ErrorCode, type Site } from '@herald/protocol'
import { HashedSecret, parseSite } from '@herald/node-runtime'
import { accessGrew, describeSiteChange, diffSites, sameSecret, siteChangeRefused } from './site-change.js'

// one stored hash for every entry that gives one: parsing a plain secret costs a scrypt
const hash = (await HashedSecret.hash('a-secret-1')).encode()
const other = (await HashedSecret.hash('a-secret-2')).encode()

type Doc = Record<string, unknown>
const base = (): Doc => ({
  guests: false,
  admin: { roles: ['ops'] },
  events: [
    { name: 'temp', category: 'replacing', access: 'everyone' },
    { name: 'log', category: 'queueing', maxQueueSize: 100 },
    { name: 'alarm', category: 'queueing', access: { roles: ['ops'] } }
  ],
  services: [{ id: 'boiler', secretHash: hash, events: ['temp', 'log'] }],
  users: [{ name: 'alice', passwordHash: hash, roles: ['ops'] }, { name: 'bob', passwordHash: hash, roles: [] }]
})
const site = (change: (d: Doc) => void = () => {}): Promise<Site> => {
  const d = base()
  change(d)
  return parseSite(d)
}
const events = (d: Doc): Doc[] => d.events as Doc[]
const none = new Map<string, number>()

describe('diffSites', () => {
  it('the same file reloaded changes nothing and disconnects nobody', async () => {
    const c = diffSites(await site(), await site(), none)
    expect(c.report.changed).toBe(false)
    expect(c.problems).toEqual([])
    expect([...c.servicesToDisconnect, ...c.usersToDisconnect]).toEqual([])
    expect(describeSiteChange(c.report)).toBe('site reloaded: nothing changed')
  })

  it('[SITE-KEY-4] a key or maxKeys added or changed is a changed event, allowed with events stored', async () => {
    const keyed = await site((d) => { events(d)[0] = { name: 'temp', category: 'replacing', access: 'everyone', key: { field: 'device' } } })
    const stored = new Map([['temp', 3]])
    for (const [a, b] of [[await site(), keyed], [keyed, await site((d) => { events(d)[0] = { name: 'temp', category: 'replacing', access: 'everyone', key: { field: 'room' } } })],
      [keyed, await site((d) => { events(d)[0] = { name: 'temp', category: 'replacing', access: 'everyone', key: { field: 'device' }, maxKeys: 5 } })],
      [keyed, await site((d) => { events(d)[0] = { name: 'temp', category: 'replacing', access: 'everyone', key: 'raise' } })]] as const) {
      const c = diffSites(a, b, stored)
      expect(c.report.events.changed).toEqual(['temp'])
      expect(c.problems).toEqual([])
    }
    expect(diffSites(keyed, keyed, stored).report.changed).toBe(false)
  })

  it('names what was added, removed and changed, guests and admin roles', async () => {
    const next = await site((d) => {
      d.guests = true
      d.admin = { roles: ['ops', 'boss'] }
      events(d).push({ name: 'door', category: 'private' })
      events(d)[1] = { name: 'log', category: 'queueing', maxQueueSize: 50 }
      d.services = [{ id: 'boiler', secretHash: hash, events: ['temp'] }, { id: 'pump', secretHash: hash, events: ['door'] }]
      d.users = [{ name: 'alice', passwordHash: hash, roles: [] }, { name: 'carol', passwordHash: hash }]
    })
    const c = diffSites(await site(), next, none)
    expect(c.problems).toEqual([])
    expect(c.report).toEqual({
      events: { added: ['door'], removed: [], changed: ['log'] },
      services: { added: ['pump'], removed: [], changed: ['boiler'] },
      users: { added: ['carol'], removed: ['bob'], changed: ['alice'] },
      guests: true,
      adminRoles: ['boss', 'ops'],
      changed: true
    })
    // a role or event-list change keeps the connection; a removal ends it
    expect([...c.servicesToDisconnect]).toEqual([])
    expect([...c.usersToDisconnect]).toEqual(['bob'])
    expect(describeSiteChange(c.report)).toBe('site reloaded: events added: door; events changed: log; services added: pump; services changed: boiler; users added: carol; users removed: bob; users changed: alice; guests admitted; admin roles: boss, ops')
    expect(JSON.parse(JSON.stringify(c.report))).toEqual(c.report)
  })

  it('a changed secret disconnects its service or user ([SITE-RELOAD-3])', async () => {
    const next = await site((d) => {
      d.services = [{ id: 'boiler', secretHash: other, events: ['temp', 'log'] }]
      d.users = [{ name: 'alice', passwordHash: hash, roles: ['ops'] }, { name: 'bob', passwordHash: other, roles: [] }]
    })
    const c = diffSites(await site(), next, none)
    expect([...c.servicesToDisconnect]).toEqual(['boiler'])
    expect([...c.usersToDisconnect]).toEqual(['bob'])
    expect(c.report.users.changed).toEqual(['bob'])
  })

  it('a plain secret loaded twice is the same secret; a different one is not', async () => {
    const a = await HashedSecret.hash('plain-secret')
    expect(sameSecret(a, await HashedSecret.hash('plain-secret'))).toBe(true)
    expect(sameSecret(a, await HashedSecret.hash('plain-secreT'))).toBe(false)
    expect(sameSecret(HashedSecret.parse(hash, 'x'), HashedSecret.parse(hash, 'y'))).toBe(true)
    expect(sameSecret(HashedSecret.parse(hash, 'x'), HashedSecret.parse(other, 'y'))).toBe(false)
    // a plain secret and a stored hash of it: counted as changed (a login again, never a wrong keep)
    expect(sameSecret(a, HashedSecret.parse(a.encode(), 'x'))).toBe(false)
  })

  it('refuses a category change, naming the event, whether or not anything is stored ([SITE-RELOAD-2])', async () => {
    const next = await site((d) => { events(d)[1] = { name: 'log', category: 'private' } })
    const c = diffSites(await site(), next, none)
    expect(c.problems.map((p) => p.event)).toEqual(['log'])
    expect(c.problems[0]?.reason).toContain('category changed from queueing to private')
    const err = siteChangeRefused(c.problems)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.code).toBe(ErrorCode.SITE_INVALID)
    expect(err.message).toMatch(/^site reload refused, nothing changed: event "log": its category changed/)
  })

  it('refuses removing an event the store holds events of; allows it when none are stored ([SITE-RELOAD-2])', async () => {
    const next = await site((d) => {
      d.events = events(d).filter((e) => e.name !== 'alarm')
      d.services = []
    })
    expect(diffSites(await site(), next, new Map([['alarm', 0], ['log', 3]])).problems).toEqual([])
    const c = diffSites(await site(), next, new Map([['alarm', 2]]))
    expect(c.problems.map((p) => p.event)).toEqual(['alarm'])
    expect(c.problems[0]?.reason).toContain('the store holds 2 events of it')
    // a store that cannot tell: refused, never a guess
    const unknown = diffSites(await site(), next, null).problems
    expect(unknown.map((p) => p.event)).toEqual(['alarm'])
    expect(unknown[0]?.reason).toContain('cannot tell')
  })

  it('names every offending event at once', async () => {
    const next = await site((d) => {
      d.events = [{ name: 'temp', category: 'queueing' }, { name: 'log', category: 'queueing', maxQueueSize: 100 }]
      d.services = []
    })
    const c = diffSites(await site(), next, new Map([['alarm', 1]]))
    expect(c.problems.map((p) => p.event).sort()).toEqual(['alarm', 'temp'])
    expect(siteChangeRefused(c.problems).message).toContain('event "temp"')
    expect(siteChangeRefused(c.problems).message).toContain('event "alarm"')
  })

  it('smaller limits, a shorter lifetime and a smaller payload are not refused (applied to what comes next)', async () => {
    const next = await site((d) => { events(d)[1] = { name: 'log', category: 'queueing', maxQueueSize: 1, lifetime: '1m', maxPayload: '1KiB' } })
    const c = diffSites(await site(), next, new Map([['log', 100]]))
    expect(c.problems).toEqual([])
    expect(c.report.events.changed).toEqual(['log'])
  })
})

describe('accessGrew', () => {
  it('is true when a user may receive an event it could not before, and only then', async () => {
    const prev = await site()
    const bob = (s: Site) => s.users.get('bob') ?? null
    const grantBob = await site((d) => { d.users = [{ name: 'alice', passwordHash: hash, roles: ['ops'] }, { name: 'bob', passwordHash: hash, roles: ['ops'] }] })
    expect(accessGrew(prev, bob(prev), grantBob, bob(grantBob))).toBe(true)
    // withdrawn only: nothing to ask again for
    const alice = (s: Site) => s.users.get('alice') ?? null
    const dropAlice = await site((d) => { d.users = [{ name: 'alice', passwordHash: hash, roles: [] }, { name: 'bob', passwordHash: hash }] })
    expect(accessGrew(prev, alice(prev), dropAlice, alice(dropAlice))).toBe(false)
    // a new event the user may receive
    const added = await site((d) => { events(d).push({ name: 'door', category: 'queueing' }) })
    expect(accessGrew(prev, bob(prev), added, bob(added))).toBe(true)
    // guests never receive private events, whatever the rule
    const priv = await site((d) => { d.guests = true; events(d).push({ name: 'door', category: 'private', access: 'everyone' }) })
    expect(accessGrew(prev, null, priv, null)).toBe(false)
    expect(accessGrew(prev, null, prev, null)).toBe(false)
  })
})

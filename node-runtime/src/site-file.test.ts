import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HashedSecret, SCRYPT_DEFAULTS, SCRYPT_MINIMUM } from './credentials.js'
import { ConfigError, ErrorCode } from '@herald/protocol'
import { SITE_DEFAULTS, eventsOfService, isAdmin, mayReceive, type EventDefinition, type Site, type UserDefinition } from '@herald/protocol'
import { loadSite, parseSite } from './site-file.js'
import { tempDir } from './testing/index.js'

/** Hashes made by the test itself are at the minimum cost a site accepts ([SITE-CRED-2]), which is the default. */
let hash = ''

beforeAll(async () => {
  hash = (await HashedSecret.hash('service-secret-1', SCRYPT_MINIMUM)).encode()
})

async function rejection (p: Promise<unknown>): Promise<ConfigError> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error('expected a ConfigError, but the call resolved')
}

/** A valid site: events[0] and events[1] are fine, tests append or replace entries after them. */
function baseDoc (): { events: unknown[], services: unknown[], users: unknown[], guests?: unknown, [key: string]: unknown } {
  return {
    events: [
      { name: 'temperature', category: 'replacing', access: 'everyone' },
      { name: 'alarm', category: 'queueing', lifetime: '1h', maxQueueSize: 500, maxPayload: '1KiB', access: { roles: ['operator', 'admin'] } },
      { name: 'message', category: 'private', maxPerRecipient: 20 },
      { name: 'log.line_v2', category: 'queueing' }
    ],
    services: [{ id: 'boiler', secretHash: hash, events: ['temperature', 'alarm', 'message'] }],
    users: [
      { name: 'alice', passwordHash: hash, roles: ['operator'] },
      { name: 'bob', passwordHash: hash }
    ],
    guests: true
  }
}

function withEvent (entry: unknown): unknown {
  const doc = baseDoc()
  doc.events = [doc.events[0], doc.events[1], entry]
  return doc
}

function withService (entry: unknown): unknown {
  const doc = baseDoc()
  doc.services = [doc.services[0], entry]
  return doc
}

function withUser (entry: unknown): unknown {
  const doc = baseDoc()
  doc.users = [doc.users[0], entry]
  return doc
}

describe('parseSite with a valid site', () => {
  let site: Site
  beforeAll(async () => { site = await parseSite(baseDoc()) })

  it('has every event in file order with its settings and the defaults for what it leaves out', () => {
    expect([...site.events.keys()]).toEqual(['temperature', 'alarm', 'message', 'log.line_v2'])
    expect(site.events.get('temperature')).toEqual({
      name: 'temperature', category: 'replacing', lifetimeMs: null, maxQueueSize: 1, maxPerRecipient: 1000, maxPayloadBytes: 65_536, access: { kind: 'everyone' }
    })
    expect(site.events.get('alarm')).toEqual({
      name: 'alarm', category: 'queueing', lifetimeMs: 3_600_000, maxQueueSize: 500, maxPerRecipient: 1000, maxPayloadBytes: 1024, access: { kind: 'roles', roles: new Set(['operator', 'admin']) }
    })
    expect(site.events.get('message')).toEqual({
      name: 'message', category: 'private', lifetimeMs: 7 * 86_400_000, maxQueueSize: 10_000, maxPerRecipient: 20, maxPayloadBytes: 65_536, access: { kind: 'authenticated' }
    })
    expect(site.events.get('log.line_v2')).toEqual({
      name: 'log.line_v2', category: 'queueing', lifetimeMs: 604_800_000, maxQueueSize: 10_000, maxPerRecipient: 1000, maxPayloadBytes: 64 * 1024, access: { kind: 'authenticated' }
    })
  })

  it('the defaults table is 7d, 10000, 1000, 64 KiB and 10000 keys', () => {
    expect(SITE_DEFAULTS).toEqual({ lifetimeMs: 604_800_000, maxQueueSize: 10_000, maxPerRecipient: 1000, maxPayloadBytes: 65_536, maxKeys: 10_000 })
  })

  it('[SITE-KEY-1] a replacing event keyed by a payload field or by raise, with maxKeys or its default', async () => {
    const doc = baseDoc()
    doc.events = [...doc.events, { name: 'thermo', category: 'replacing', key: { field: 'device' }, maxKeys: 2 }, { name: 'door', category: 'replacing', key: 'raise' }]
    const keyed = await parseSite(doc)
    expect(keyed.events.get('thermo')).toMatchObject({ key: { kind: 'field', field: 'device' }, maxKeys: 2 })
    expect(keyed.events.get('door')).toMatchObject({ key: { kind: 'raise' }, maxKeys: 10_000 })
    expect('key' in (keyed.events.get('temperature') as object)).toBe(false)
  })

  it('has the services with their events and the users with their roles', async () => {
    expect([...site.services.keys()]).toEqual(['boiler'])
    expect(site.services.get('boiler')?.events).toEqual(new Set(['temperature', 'alarm', 'message']))
    expect(await site.services.get('boiler')?.secret.verify('service-secret-1')).toBe(true)
    expect([...site.users.keys()]).toEqual(['alice', 'bob'])
    expect(site.users.get('alice')?.roles).toEqual(new Set(['operator']))
    expect(site.users.get('bob')?.roles).toEqual(new Set())
    expect(site.guests).toBe(true)
  })

  it('an empty site is refused: a broker on it would store nothing ([SITE-EMPTY-1])', async () => {
    for (const doc of [{}, { events: [] }, { events: null, services: [] }, { allowNoEvents: false }]) {
      const err = await rejection(parseSite(doc))
      expect(err.code).toBe(ErrorCode.SITE_INVALID)
      expect(err.message).toBe('site: no events are defined (a broker on it would store nothing); list them under "events", or set "allowNoEvents: true" if that is what you want')
    }
  })

  it('a site with no events loads when it says allowNoEvents: true; it has no services, users or guests', async () => {
    const empty = await parseSite({ allowNoEvents: true })
    expect(empty.events.size + empty.services.size + empty.users.size).toBe(0)
    expect(empty.guests).toBe(false)
  })

  it('eventsOfService gives the definitions a service may raise; an unknown service is a ConfigError naming it', () => {
    expect(eventsOfService(site, 'boiler').map((e) => e.name)).toEqual(['temperature', 'alarm', 'message'])
    expect(() => eventsOfService(site, 'fridge')).toThrow(ConfigError)
    expect(() => eventsOfService(site, 'fridge')).toThrow('service "fridge" is not in the site')
  })

  it('accepts every bound at its edge', async () => {
    const edges = await parseSite({
      events: [
        { name: 'a', category: 'queueing', lifetime: '1s', maxQueueSize: 1, maxPayload: 0 },
        { name: 'b', category: 'queueing', lifetime: '365d', maxQueueSize: 1_000_000, maxPayload: '16MiB' },
        { name: 'c', category: 'queueing', lifetime: 1000, maxQueueSize: 10_000_000 },
        { name: 'd', category: 'private', maxPerRecipient: 1_000_000, lifetime: '52w' },
        { name: 'e', category: 'private', maxPerRecipient: 1 },
        { name: 'f'.repeat(64), category: 'replacing', access: { roles: ['r'] } }
      ]
    })
    expect([...edges.events.values()].map((e) => [e.lifetimeMs, e.maxQueueSize, e.maxPerRecipient, e.maxPayloadBytes])).toEqual([
      [1000, 1, 1000, 0],
      [31_536_000_000, 1_000_000, 1000, 16_777_216],
      [1000, 10_000_000, 1000, 65_536],
      [52 * 604_800_000, 10_000, 1_000_000, 65_536],
      [604_800_000, 10_000, 1, 65_536],
      [null, 1, 1000, 65_536]
    ])
  })
})

describe('parseSite refuses each invalid entry with a SITE_INVALID ConfigError naming it', () => {
  it.each<[string, () => unknown, string[]]>([
    // events
    ['an event name with a space', () => withEvent({ name: 'bad name', category: 'queueing' }), ['events[2]', '"bad name" is not a valid name']],
    ['an event name with a slash', () => withEvent({ name: 'a/b', category: 'queueing' }), ['events[2]', '"a/b"']],
    ['an event name with a wildcard', () => withEvent({ name: 'a+', category: 'queueing' }), ['events[2]', '"a+"']],
    ['an event name starting with $', () => withEvent({ name: '$sys', category: 'queueing' }), ['events[2]', '"$sys"']],
    ['an event name starting with a dot', () => withEvent({ name: '.hidden', category: 'queueing' }), ['events[2]', '".hidden"']],
    ['an event name of 65 characters', () => withEvent({ name: 'x'.repeat(65), category: 'queueing' }), ['events[2]', `"${'x'.repeat(65)}"`]],
    ['an empty event name', () => withEvent({ name: '', category: 'queueing' }), ['events[2]', 'name "" is not a valid name']],
    ['an event without a name', () => withEvent({ category: 'queueing' }), ['events[2]', 'name undefined is not a valid name']],
    ['an event name that is a number', () => withEvent({ name: 5, category: 'queueing' }), ['events[2]', 'name 5 is not a valid name']],
    ['a duplicate event name', () => withEvent({ name: 'alarm', category: 'queueing' }), ['events[2]', 'event name "alarm" is defined twice']],
    ['an unknown category', () => withEvent({ name: 'x1', category: 'broadcast' }), ['events[2] (x1)', 'category "broadcast" must be one of replacing, queueing, private']],
    ['a missing category', () => withEvent({ name: 'x1' }), ['events[2] (x1)', 'category undefined must be one of']],
    ['a lifetime on a replacing event', () => withEvent({ name: 'x1', category: 'replacing', lifetime: '1h' }), ['events[2] (x1)', 'a replacing event has no lifetime']],
    ['a maxQueueSize on a replacing event', () => withEvent({ name: 'x1', category: 'replacing', maxQueueSize: 5 }), ['events[2] (x1)', 'maxQueueSize does not apply']],
    ['a lifetime below 1s', () => withEvent({ name: 'x1', category: 'queueing', lifetime: '999ms' }), ['events[2] (x1)', 'lifetime 999ms must be from 1s to 365d']],
    ['a lifetime of 0', () => withEvent({ name: 'x1', category: 'private', lifetime: 0 }), ['events[2] (x1)', 'lifetime 0ms must be from 1s to 365d']],
    ['a lifetime above 365d', () => withEvent({ name: 'x1', category: 'queueing', lifetime: '366d' }), ['events[2] (x1)', 'lifetime 366d must be from 1s to 365d']],
    ['a lifetime of 53 weeks', () => withEvent({ name: 'x1', category: 'queueing', lifetime: '53w' }), ['events[2] (x1)', 'lifetime 371d']],
    ['a lifetime that is not a duration', () => withEvent({ name: 'x1', category: 'queueing', lifetime: 'soon' }), ['events[2] (x1): lifetime', '"soon" is not a duration']],
    ['maxQueueSize 0', () => withEvent({ name: 'x1', category: 'queueing', maxQueueSize: 0 }), ['events[2] (x1): maxQueueSize', '0 must be a whole number from 1 to 10000000']],
    ['maxQueueSize above 10,000,000', () => withEvent({ name: 'x1', category: 'queueing', maxQueueSize: 10_000_001 }), ['events[2] (x1): maxQueueSize', '10000001 must be a whole number']],
    ['a fractional maxQueueSize', () => withEvent({ name: 'x1', category: 'queueing', maxQueueSize: 2.5 }), ['events[2] (x1): maxQueueSize', '2.5']],
    ['a maxQueueSize string', () => withEvent({ name: 'x1', category: 'queueing', maxQueueSize: '100' }), ['events[2] (x1): maxQueueSize', '"100"']],
    ['a maxQueueSize on a private event', () => withEvent({ name: 'x1', category: 'private', maxQueueSize: 5 }), ['events[2] (x1)', 'maxQueueSize applies to queueing events']],
    ['a maxPerRecipient on a queueing event', () => withEvent({ name: 'x1', category: 'queueing', maxPerRecipient: 5 }), ['events[2] (x1)', 'maxPerRecipient applies to private events only']],
    ['a maxPerRecipient on a replacing event', () => withEvent({ name: 'x1', category: 'replacing', maxPerRecipient: 5 }), ['events[2] (x1)', 'maxPerRecipient applies to private events only']],
    ['maxPerRecipient 0', () => withEvent({ name: 'x1', category: 'private', maxPerRecipient: 0 }), ['events[2] (x1): maxPerRecipient', 'from 1 to 1000000']],
    ['maxPerRecipient above 1,000,000', () => withEvent({ name: 'x1', category: 'private', maxPerRecipient: 1_000_001 }), ['events[2] (x1): maxPerRecipient', '1000001']],
    ['a maxPayload that is not a size', () => withEvent({ name: 'x1', category: 'queueing', maxPayload: 'lots' }), ['events[2] (x1): maxPayload', '"lots" is not a size']],
    ['a negative maxPayload', () => withEvent({ name: 'x1', category: 'queueing', maxPayload: -1 }), ['events[2] (x1): maxPayload', '-1 is not a size']],
    ['a maxPayload above 16 MiB', () => withEvent({ name: 'x1', category: 'queueing', maxPayload: '17MiB' }), ['events[2] (x1)', 'maxPayload 17825792 is over the limit of 16777216 bytes']],
    ['an unknown access word', () => withEvent({ name: 'x1', category: 'queueing', access: 'nobody' }), ['events[2] (x1)', 'access must be "everyone", "authenticated" or { roles: [ ... ] }']],
    ['access roles that are not a list', () => withEvent({ name: 'x1', category: 'queueing', access: { roles: 'admin' } }), ['events[2] (x1)', 'access must be']],
    ['access with an extra key', () => withEvent({ name: 'x1', category: 'queueing', access: { roles: ['admin'], users: ['bob'] } }), ['events[2] (x1)', 'access must be']],
    ['access with no roles', () => withEvent({ name: 'x1', category: 'queueing', access: { roles: [] } }), ['events[2] (x1)', 'access.roles must name at least one role']],
    ['access with a bad role name', () => withEvent({ name: 'x1', category: 'queueing', access: { roles: ['admin', 'night shift'] } }), ['events[2] (x1): access.roles[1]', '"night shift" is not a valid name']],
    ['an unknown key in an event', () => withEvent({ name: 'x1', category: 'queueing', ttl: '1h' }), ['events[2]', 'unknown key "ttl"']],
    ['[SITE-KEY-1] a key on a queueing event', () => withEvent({ name: 'x1', category: 'queueing', key: 'raise' }), ['events[2] (x1)', 'only a replacing event can have a key', 'queueing']],
    ['[SITE-KEY-1] a key on a private event', () => withEvent({ name: 'x1', category: 'private', key: { field: 'device' } }), ['events[2] (x1)', 'only a replacing event can have a key']],
    ['[SITE-KEY-1] a key that is neither raise nor a field', () => withEvent({ name: 'x1', category: 'replacing', key: 'device' }), ['events[2] (x1)', 'key "device" must be "raise" or { field: <payload field> }']],
    ['[SITE-KEY-1] a key field that is not a name', () => withEvent({ name: 'x1', category: 'replacing', key: { field: 'a.b' } }), ['events[2] (x1)', 'key.field "a.b"']],
    ['[SITE-KEY-1] a key with an unknown entry', () => withEvent({ name: 'x1', category: 'replacing', key: { field: 'd', path: 'x' } }), ['events[2] (x1): key', 'unknown key "path"']],
    ['[SITE-KEY-3] maxKeys without a key', () => withEvent({ name: 'x1', category: 'replacing', maxKeys: 5 }), ['events[2] (x1)', 'maxKeys applies to keyed events only']],
    ['[SITE-KEY-3] maxKeys 0', () => withEvent({ name: 'x1', category: 'replacing', key: 'raise', maxKeys: 0 }), ['events[2] (x1): maxKeys', 'from 1 to 1000000']],
    ['[SITE-KEY-3] maxKeys above 1,000,000', () => withEvent({ name: 'x1', category: 'replacing', key: 'raise', maxKeys: 1_000_001 }), ['events[2] (x1): maxKeys', '1000001']],
    ['an event that is not a mapping', () => withEvent('temperature'), ['events[2] must be a mapping']],
    ['events that are not a list', () => ({ events: { temperature: {} } }), ['events must be a list']],
    // services
    ['a service raising an unknown event', () => withService({ id: 'fridge', secretHash: hash, events: ['temperature', 'door'] }), ['services[1] (fridge)', 'events: "door" is not an event of this site']],
    ['a duplicate service id', () => withService({ id: 'boiler', secretHash: hash }), ['services[1] (boiler)', 'service id is defined twice']],
    ['a service id with bad characters', () => withService({ id: 'my service', secretHash: hash }), ['services[1]', 'id "my service" is not a valid name']],
    ['a bad event name in a service', () => withService({ id: 'fridge', secretHash: hash, events: ['ok', 'a#b'] }), ['services[1] (fridge): events[1]', '"a#b" is not a valid name']],
    ['both secret and secretHash', () => withService({ id: 'fridge', secret: 'long-enough-secret', secretHash: hash }), ['services[1] (fridge)', 'give exactly one of "secret" or "secretHash"']],
    ['neither secret nor secretHash', () => withService({ id: 'fridge', events: [] }), ['services[1] (fridge)', 'give exactly one of "secret" or "secretHash"']],
    ['a short secret', () => withService({ id: 'fridge', secret: '1234567' }), ['services[1] (fridge)', '"secret" must be a string of at least 8 characters']],
    ['a secret that is a number', () => withService({ id: 'fridge', secret: 123_456_789 }), ['services[1] (fridge)', '"secret" must be a string']],
    ['a malformed secretHash', () => withService({ id: 'fridge', secretHash: 'md5$abcdef' }), ['services[1] (fridge).secretHash', 'not a hash of the form scrypt$N$r$p$salt$hash']],
    ['a secretHash with N not a power of two', () => withService({ id: 'fridge', secretHash: hash.replace('scrypt$16384$', 'scrypt$16383$') }), ['services[1] (fridge).secretHash', 'scrypt N must be a power of two']],
    ['a secretHash with a short hash', () => withService({ id: 'fridge', secretHash: `scrypt$16$1$1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(8).toString('base64')}` }), ['services[1] (fridge).secretHash', 'hash is too short']],
    ['a secretHash that is not a string', () => withService({ id: 'fridge', secretHash: 42 }), ['services[1] (fridge)', '"secretHash" must be a string']],
    ['an unknown key in a service', () => withService({ id: 'fridge', secretHash: hash, password: 'x' }), ['services[1]', 'unknown key "password"']],
    ['a service that is not a mapping', () => withService(['fridge']), ['services[1] must be a mapping']],
    // users
    ['a duplicate user', () => withUser({ name: 'alice', passwordHash: hash }), ['users[1] (alice)', 'user name is defined twice']],
    ['a user name with bad characters', () => withUser({ name: 'bob smith', passwordHash: hash }), ['users[1]', 'name "bob smith" is not a valid name']],
    ['a bad role name', () => withUser({ name: 'carol', passwordHash: hash, roles: ['ok', 'no/slash'] }), ['users[1] (carol): roles[1]', '"no/slash"']],
    ['both password and passwordHash', () => withUser({ name: 'carol', password: 'long-enough-pw', passwordHash: hash }), ['users[1] (carol)', 'give exactly one of "password" or "passwordHash"']],
    ['a short password', () => withUser({ name: 'carol', password: 'short' }), ['users[1] (carol)', '"password" must be a string of at least 8 characters']],
    ['an unknown key in a user', () => withUser({ name: 'carol', passwordHash: hash, secret: 'x' }), ['users[1]', 'unknown key "secret"']],
    ['a user named like a service ([SITE-NAME-2])', () => withUser({ name: 'boiler', passwordHash: hash }), ['users[1] (boiler)', 'user name is also a service id']],
    // admin
    ['admin that is a list', () => ({ ...baseDoc(), admin: ['operator'] }), ['admin must be a mapping { roles: [ ... ] }']],
    ['admin with no roles', () => ({ ...baseDoc(), admin: { roles: [] } }), ['admin.roles must name at least one role']],
    ['admin with an extra key', () => ({ ...baseDoc(), admin: { roles: ['ops'], users: ['alice'] } }), ['admin must be a mapping']],
    ['admin with a bad role name', () => ({ ...baseDoc(), admin: { roles: ['night shift'] } }), ['admin.roles[0]', '"night shift" is not a valid name']],
    // the document
    ['an unknown top-level key', () => ({ ...baseDoc(), devices: [] }), ['site: unknown key "devices"']],
    ['guests that is not a boolean', () => ({ ...baseDoc(), guests: 'yes' }), ['site: guests must be true or false']],
    ['allowNoEvents that is not a boolean', () => ({ ...baseDoc(), allowNoEvents: 'yes' }), ['site: allowNoEvents must be true or false']],
    ['a document that is a list', () => [], ['site: the document must be a mapping']],
    ['a document that is null', () => null, ['site: the document must be a mapping']]
  ])('%s', async (_label, doc, parts) => {
    const err = await rejection(parseSite(doc()))
    expect(err.code).toBe(ErrorCode.SITE_INVALID)
    for (const part of parts) expect(err.message).toContain(part)
  })
})

describe('admins ([SITE-ADMIN-1])', () => {
  it('users with a role named under admin.roles are admins; others, guests, and everyone on a site without admin are not', async () => {
    const site = await parseSite({ ...baseDoc(), admin: { roles: ['operator', 'root'] } })
    expect([...site.adminRoles]).toEqual(['operator', 'root'])
    expect(isAdmin(site, site.users.get('alice') as UserDefinition)).toBe(true)
    expect(isAdmin(site, site.users.get('bob') as UserDefinition)).toBe(false)
    expect(isAdmin(site, null)).toBe(false)
    const plain = await parseSite(baseDoc())
    expect(plain.adminRoles.size).toBe(0)
    expect(isAdmin(plain, plain.users.get('alice') as UserDefinition)).toBe(false)
  })
})

describe('mayReceive', () => {
  let site: Site
  beforeAll(async () => {
    site = await parseSite({
      events: [
        { name: 'public', category: 'replacing', access: 'everyone' },
        { name: 'members', category: 'replacing', access: 'authenticated' },
        { name: 'members-default', category: 'replacing' },
        { name: 'ops', category: 'queueing', access: { roles: ['operator', 'admin'] } }
      ],
      users: [
        { name: 'alice', passwordHash: hash, roles: ['operator'] },
        { name: 'bob', passwordHash: hash },
        { name: 'carol', passwordHash: hash, roles: ['viewer', 'admin'] },
        { name: 'dave', passwordHash: hash, roles: ['viewer'] }
      ]
    })
  })
  const ev = (name: string): EventDefinition => site.events.get(name) as EventDefinition
  const user = (name: string): UserDefinition => site.users.get(name) as UserDefinition

  it('"everyone" admits guests and every user', () => {
    expect([null, 'alice', 'bob', 'dave'].map((u) => mayReceive(ev('public'), u === null ? null : user(u)))).toEqual([true, true, true, true])
  })

  it('"authenticated" (also the default) admits every user and no guest', () => {
    for (const name of ['members', 'members-default']) {
      expect(mayReceive(ev(name), null)).toBe(false)
      expect(mayReceive(ev(name), user('bob'))).toBe(true)
      expect(mayReceive(ev(name), user('alice'))).toBe(true)
    }
  })

  it('roles admit users holding at least one of them and nobody else', () => {
    expect(mayReceive(ev('ops'), null)).toBe(false)
    expect(mayReceive(ev('ops'), user('alice'))).toBe(true)
    expect(mayReceive(ev('ops'), user('carol'))).toBe(true)
    expect(mayReceive(ev('ops'), user('bob'))).toBe(false)
    expect(mayReceive(ev('ops'), user('dave'))).toBe(false)
  })
})

describe('credentials in the site', () => {
  // two plain secrets, hashed at the default scrypt cost by the loader
  const SERVICE_SECRET = 'correct-horse-battery-staple'
  const USER_PASSWORD = 'Tr0ub4dor&3-päss'
  let site: Site

  beforeAll(async () => {
    site = await parseSite({
      events: [{ name: 'temperature', category: 'replacing' }],
      services: [{ id: 'boiler', secret: SERVICE_SECRET, events: ['temperature'] }],
      users: [{ name: 'alice', password: USER_PASSWORD }]
    })
  })

  it('a plain secret is hashed at load: verify accepts it and refuses others', async () => {
    const secret = site.services.get('boiler')?.secret as HashedSecret
    expect(await secret.verify(SERVICE_SECRET)).toBe(true)
    expect(await secret.verify(`${SERVICE_SECRET}x`)).toBe(false)
    expect(await secret.verify(SERVICE_SECRET.slice(0, -1))).toBe(false)
    expect(await secret.verify('')).toBe(false)
    const password = site.users.get('alice')?.secret as HashedSecret
    expect(await password.verify(USER_PASSWORD)).toBe(true)
    expect(await password.verify(SERVICE_SECRET)).toBe(false)
  })

  it('the hash is made at the default cost with a random salt', () => {
    const encoded = (site.services.get('boiler')?.secret as HashedSecret).encode()
    expect(encoded).toMatch(/^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/)
    expect(encoded).not.toBe((site.users.get('alice')?.secret as HashedSecret).encode())
  })

  it('dumps of the site and of a HashedSecret show neither the secret nor its hash or salt', () => {
    const secrets = [site.services.get('boiler')?.secret as HashedSecret, site.users.get('alice')?.secret as HashedSecret]
    const hidden = [SERVICE_SECRET, USER_PASSWORD]
    for (const s of secrets) {
      const [, , , , salt, h] = s.encode().split('$')
      hidden.push(salt as string, h as string)
    }
    const json = JSON.stringify(site, (_k, v: unknown): unknown => (v instanceof Map ? Object.fromEntries(v as Map<string, unknown>) : v instanceof Set ? [...(v as Set<unknown>)] : v))
    const dumps = [
      json,
      inspect(site, { depth: Infinity, showHidden: true }),
      ...secrets.flatMap((s) => [JSON.stringify(s), inspect(s), inspect(s, { showHidden: true, depth: Infinity }), String(s), `${s}`])
    ]
    // the JSON dump really walked into the services and users
    expect(json).toContain('"boiler"')
    expect(json).toContain('"secret":"[HashedSecret]"')
    for (const dump of dumps) {
      for (const text of hidden) expect(dump).not.toContain(text)
    }
    expect(inspect(secrets[0])).toBe('[HashedSecret]')
    expect(JSON.stringify({ s: secrets[0] })).toBe('{"s":"[HashedSecret]"}')
  })

  it('a hash made by HashedSecret.hash is accepted as secretHash and verifies the same secret', async () => {
    const encoded = (await HashedSecret.hash('another-secret-9')).encode()
    const s = await parseSite({ allowNoEvents: true, services: [{ id: 'svc', secretHash: encoded }] })
    expect(await s.services.get('svc')?.secret.verify('another-secret-9')).toBe(true)
    expect(await s.services.get('svc')?.secret.verify('another-secret-8')).toBe(false)
  })
})

describe('loadSite', () => {
  let dir: { path: string, remove: () => Promise<void> }
  beforeAll(async () => { dir = await tempDir('herald-site-') })
  afterAll(async () => { await dir.remove() })

  it('reads a YAML site file', async () => {
    const path = join(dir.path, 'site.yaml')
    await writeFile(path, [
      '# a small site',
      'guests: false',
      'events:',
      '  - name: temperature',
      '    category: replacing',
      '    access: everyone',
      '  - name: alarm',
      '    category: queueing',
      '    lifetime: 10m',
      '    maxPayload: 4KiB',
      '    access:',
      '      roles: [operator]',
      'services:',
      '  - id: boiler',
      `    secretHash: "${hash}"`,
      '    events: [temperature, alarm]',
      'users:',
      '  - name: alice',
      `    passwordHash: '${hash}'`,
      '    roles: [operator]',
      ''
    ].join('\n'))
    const site = await loadSite(path)
    expect([...site.events.keys()]).toEqual(['temperature', 'alarm'])
    expect(site.events.get('alarm')).toEqual({
      name: 'alarm', category: 'queueing', lifetimeMs: 600_000, maxQueueSize: 10_000, maxPerRecipient: 1000, maxPayloadBytes: 4096, access: { kind: 'roles', roles: new Set(['operator']) }
    })
    expect(site.services.get('boiler')?.events).toEqual(new Set(['temperature', 'alarm']))
    expect(site.users.get('alice')?.roles).toEqual(new Set(['operator']))
    expect(await site.users.get('alice')?.secret.verify('service-secret-1')).toBe(true)
    expect(site.guests).toBe(false)
  })

  it('reads a JSON site file', async () => {
    const path = join(dir.path, 'site.json')
    await writeFile(path, JSON.stringify({
      guests: true,
      events: [{ name: 'message', category: 'private', lifetime: '2d', maxPerRecipient: 5 }],
      services: [{ id: 'chat', secretHash: hash, events: ['message'] }]
    }))
    const site = await loadSite(path)
    expect(site.events.get('message')).toEqual({
      name: 'message', category: 'private', lifetimeMs: 172_800_000, maxQueueSize: 10_000, maxPerRecipient: 5, maxPayloadBytes: 65_536, access: { kind: 'authenticated' }
    })
    expect(site.guests).toBe(true)
    expect([...site.services.keys()]).toEqual(['chat'])
  })

  it('a JSON file starting with a byte order mark is read', async () => {
    const path = join(dir.path, 'bom.json')
    await writeFile(path, `\ufeff${JSON.stringify({ events: [{ name: 'a', category: 'replacing' }] })}`)
    expect([...(await loadSite(path)).events.keys()]).toEqual(['a'])
  })

  it('a missing file is a SITE_INVALID ConfigError naming the path', async () => {
    const path = join(dir.path, 'no-such-site.yaml')
    const err = await rejection(loadSite(path))
    expect(err.code).toBe(ErrorCode.SITE_INVALID)
    expect(err.message).toContain(`site file ${path}`)
    expect(err.message).toContain('ENOENT')
  })

  it('a file that does not parse is a SITE_INVALID ConfigError naming the path and the format', async () => {
    const yamlPath = join(dir.path, 'broken.yaml')
    await writeFile(yamlPath, 'events: [\n  - name: x\n')
    const yamlErr = await rejection(loadSite(yamlPath))
    expect(yamlErr.code).toBe(ErrorCode.SITE_INVALID)
    expect(yamlErr.message).toContain(`site file ${yamlPath}: not valid YAML`)

    const jsonPath = join(dir.path, 'broken.json')
    await writeFile(jsonPath, '{"events": [')
    const jsonErr = await rejection(loadSite(jsonPath))
    expect(jsonErr.code).toBe(ErrorCode.SITE_INVALID)
    expect(jsonErr.message).toContain(`site file ${jsonPath}: not valid JSON`)
  })

  it.each(['site.json', 'SITE.JSON', 'Site.Json'])('a %s file with a trailing comma is refused as JSON, naming line and column ([SITE-FILE-1])', async (name) => {
    const path = join(dir.path, name)
    // valid YAML (a flow mapping may end in a comma), invalid JSON
    await writeFile(path, '{\n  "events": [{ "name": "a", "category": "replacing" }],\n}\n')
    const err = await rejection(loadSite(path))
    expect(err.code).toBe(ErrorCode.SITE_INVALID)
    expect(err.message).toMatch(new RegExp(`^site file ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not valid JSON \\(line 3, column 1\\): `))
  })

  it('an invalid entry in a file is reported with the path and the entry, the parse error as cause', async () => {
    const path = join(dir.path, 'invalid.yaml')
    await writeFile(path, 'events:\n  - name: ok\n    category: replacing\n  - name: bad\n    category: queueing\n    lifetime: 500ms\n')
    const err = await rejection(loadSite(path))
    expect(err.code).toBe(ErrorCode.SITE_INVALID)
    expect(err.message).toBe(`site file ${path}: events[1] (bad): lifetime 500ms must be from 1s to 365d`)
    expect(err.cause).toBeInstanceOf(ConfigError)
  })
})

describe('scrypt parameters in a stored hash', () => {
  const salt = 'AAAAAAAAAAAAAAAAAAAAAA=='
  const hash = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
  it.each([
    ['N below 2', `scrypt$1$1$1$${salt}$${hash}`, 'scrypt N'],
    ['N above 2^20', `scrypt$${2 ** 21}$8$1$${salt}$${hash}`, 'scrypt N'],
    ['r above 32', `scrypt$1024$33$1$${salt}$${hash}`, 'scrypt r'],
    ['p above 16', `scrypt$1024$8$17$${salt}$${hash}`, 'scrypt p'],
    ['N=65536 with r=1 (N must be below 2^(16·r))', `scrypt$65536$1$1$${salt}$${hash}`, 'scrypt N must be below']
  ])('refuses %s at load', async (_what, secretHash, message) => {
    await expect(parseSite({ allowNoEvents: true, services: [{ id: 'svc', secretHash, events: [] }] })).rejects.toThrow(message)
  })

  it.each([
    ['N=2, r=1, p=1', `scrypt$2$1$1$${salt}$${hash}`, 'N=2, r=1'],
    ['N=8192, r=8, p=1', `scrypt$8192$8$1$${salt}$${hash}`, 'N=8192, r=8'],
    ['N=16384, r=4, p=4', `scrypt$16384$4$4$${salt}$${hash}`, 'N=16384, r=4'],
    ['N=32768, r=1, p=1', `scrypt$32768$1$1$${salt}$${hash}`, 'N=32768, r=1']
  ])('refuses a hash below the minimum cost (%s) at load, naming the entry and the minimum ([SITE-CRED-2])', async (_what, secretHash, cost) => {
    const err = await rejection(parseSite({ events: [{ name: 'e', category: 'replacing' }], services: [{ id: 'svc', secretHash, events: [] }] }))
    expect(err.code).toBe(ErrorCode.SITE_INVALID)
    expect(err.message).toBe(`services[0] (svc).secretHash: scrypt cost ${cost} is below the minimum N=16384, r=8: make a new hash with "herald hash-secret"`)
  })

  it('the default cost of hash-secret and plain secrets meets the minimum', () => {
    expect(SCRYPT_DEFAULTS.N).toBeGreaterThanOrEqual(SCRYPT_MINIMUM.N)
    expect(SCRYPT_DEFAULTS.r).toBeGreaterThanOrEqual(SCRYPT_MINIMUM.r)
    expect(SCRYPT_DEFAULTS.p).toBeGreaterThanOrEqual(SCRYPT_MINIMUM.p)
  })

  it.each([
    ['N=16384, r=8, p=2', `scrypt$16384$8$2$${salt}$${hash}`],
    ['N=32768, r=8, p=1', `scrypt$32768$8$1$${salt}$${hash}`]
  ])('a hash with unusual but valid cost (%s) answers false for a wrong secret instead of throwing', async (_what, secretHash) => {
    const site = await parseSite({ allowNoEvents: true, services: [{ id: 'svc', secretHash, events: [] }] })
    await expect(site.services.get('svc')?.secret.verify('anything')).resolves.toBe(false)
  })
})

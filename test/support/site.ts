/** The site every cross-package test runs on, and credentials to match. */
import { type Site } from '@herald/protocol'
import { parseSite } from '@herald/node-runtime'

export const SECRETS = {
  'svc-a': 'svc-a-secret',
  'svc-b': 'svc-b-secret',
  alice: 'alice-password',
  bob: 'bob-password',
  carol: 'carol-password'
} as const

/** A site with one event of each category and tight limits where a test needs them. */
export const TEST_SITE_DOC = {
  guests: true,
  events: [
    { name: 'temperature', category: 'replacing', access: 'everyone' },
    { name: 'readings', category: 'queueing', lifetime: '1d', maxQueueSize: 1_000_000, access: 'authenticated' },
    { name: 'short-lived', category: 'queueing', lifetime: '2s', maxQueueSize: 1000, access: 'authenticated' },
    { name: 'small-queue', category: 'queueing', lifetime: '1d', maxQueueSize: 5, access: 'authenticated' },
    { name: 'alarms', category: 'queueing', lifetime: '7d', maxQueueSize: 1000, maxPayload: 1024, access: { roles: ['operator'] } },
    { name: 'notices', category: 'private', lifetime: '1h', maxPerRecipient: 100, access: 'authenticated' },
    { name: 'undeclared', category: 'queueing', lifetime: '1d', access: 'authenticated' },
    { name: 'blobs', category: 'queueing', lifetime: '1d', maxQueueSize: 100, maxPayload: '4MiB', access: 'authenticated' },
    { name: 'thermostat', category: 'replacing', key: { field: 'device' }, maxKeys: 3, access: 'everyone' },
    { name: 'valve', category: 'replacing', key: 'raise', access: 'everyone' }
  ],
  services: [
    { id: 'svc-a', secret: SECRETS['svc-a'], events: ['temperature', 'readings', 'short-lived', 'small-queue', 'alarms', 'notices', 'blobs', 'thermostat', 'valve'] },
    { id: 'svc-b', secret: SECRETS['svc-b'], events: ['temperature', 'readings'] }
  ],
  users: [
    { name: 'alice', password: SECRETS.alice, roles: ['operator'] },
    { name: 'bob', password: SECRETS.bob, roles: ['viewer'] },
    { name: 'carol', password: SECRETS.carol, roles: [] }
  ]
}

let cached: Promise<Site> | null = null

/** The parsed test site (hashing its secrets once per test file). */
export function testSite (): Promise<Site> {
  cached ??= parseSite(TEST_SITE_DOC)
  return cached
}

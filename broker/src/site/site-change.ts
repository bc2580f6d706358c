/**
 * What a site reload changes ([SITE-RELOAD-1..7] in docs/protocol.md): the difference between the
 * running site and a new one, and the changes stored data cannot follow. Pure: no broker, no I/O.
 */
import { ConfigError, ErrorCode, mayReceive, type EventDefinition, type Site, type SiteSecret, type UserDefinition } from '@herald/protocol'

/** What a reload changed, by name (JSON-serialisable: the CLI logs it, the admin route returns it). */
export interface SiteChangeReport {
  readonly events: { readonly added: string[], readonly removed: string[], readonly changed: string[] }
  readonly services: { readonly added: string[], readonly removed: string[], readonly changed: string[] }
  readonly users: { readonly added: string[], readonly removed: string[], readonly changed: string[] }
  /** The new `guests` when it changed, else null. */
  readonly guests: boolean | null
  /** The new admin roles when they changed, else null. */
  readonly adminRoles: string[] | null
  /** Whether anything changed at all. */
  readonly changed: boolean
}

/** One change a reload refuses, naming the event and why ([SITE-RELOAD-2]). */
export interface SiteChangeProblem {
  readonly event: string
  readonly reason: string
}

/** The full comparison: the report, and what a reload must do to live connections. */
export interface SiteChange {
  readonly report: SiteChangeReport
  readonly problems: SiteChangeProblem[]
  /** Services whose connections end: removed, or their secret changed ([SITE-RELOAD-3]). */
  readonly servicesToDisconnect: ReadonlySet<string>
  /** Users whose connections end: removed, or their secret changed ([SITE-RELOAD-3]). */
  readonly usersToDisconnect: ReadonlySet<string>
}

/** Whether two site secrets are the same secret ([SITE-RELOAD-3]). */
export function sameSecret (a: SiteSecret, b: SiteSecret): boolean {
  return a.same !== undefined ? a.same(b) : a.encode() === b.encode()
}

function sameSet (a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false
  for (const x of a) if (!b.has(x)) return false
  return true
}

function sameAccess (a: EventDefinition['access'], b: EventDefinition['access']): boolean {
  if (a.kind !== b.kind) return false
  return a.kind !== 'roles' || sameSet(a.roles, (b as typeof a).roles)
}

function sameEvent (a: EventDefinition, b: EventDefinition): boolean {
  return a.category === b.category && a.lifetimeMs === b.lifetimeMs && a.maxQueueSize === b.maxQueueSize &&
    a.maxPerRecipient === b.maxPerRecipient && a.maxPayloadBytes === b.maxPayloadBytes && sameAccess(a.access, b.access) &&
    // [SITE-KEY-4] a changed key or maxKeys is a changed event (allowed; it applies to what comes next)
    a.key?.kind === b.key?.kind && (a.key?.kind !== 'field' || b.key?.kind !== 'field' || a.key.field === b.key.field) && a.maxKeys === b.maxKeys
}

function diffMaps<V> (prev: ReadonlyMap<string, V>, next: ReadonlyMap<string, V>, same: (a: V, b: V) => boolean): { added: string[], removed: string[], changed: string[] } {
  const added: string[] = []
  const removed: string[] = []
  const changed: string[] = []
  for (const [k, v] of next) {
    const old = prev.get(k)
    if (old === undefined) added.push(k)
    else if (!same(old, v)) changed.push(k)
  }
  for (const k of prev.keys()) if (!next.has(k)) removed.push(k)
  return { added, removed, changed }
}

/**
 * Compares the running site with `next`. `storedByEvent` is what the store holds per event name
 * (expired but unpurged events included), or null if the store cannot tell.
 */
export function diffSites (prev: Site, next: Site, storedByEvent: ReadonlyMap<string, number> | null): SiteChange {
  const events = diffMaps(prev.events, next.events, sameEvent)
  const services = diffMaps(prev.services, next.services, (a, b) => sameSecret(a.secret, b.secret) && sameSet(a.events, b.events))
  const users = diffMaps(prev.users, next.users, (a, b) => sameSecret(a.secret, b.secret) && sameSet(a.roles, b.roles))
  const problems: SiteChangeProblem[] = []
  for (const name of events.changed) {
    const a = prev.events.get(name) as EventDefinition
    const b = next.events.get(name) as EventDefinition
    // [SITE-RELOAD-2] stored events, service endpoints' stores and subscriptions all carry the category
    if (a.category !== b.category) problems.push({ event: name, reason: `its category changed from ${a.category} to ${b.category}; stored events and subscriptions are ${a.category} (give the new definition a new name)` })
  }
  for (const name of events.removed) {
    // [SITE-RELOAD-2] a removed event's stored events could not be delivered, nor purged if replacing
    const n = storedByEvent === null ? null : (storedByEvent.get(name) ?? 0)
    if (n === null) problems.push({ event: name, reason: 'it was removed, and the event store cannot tell whether it holds events of it' })
    else if (n > 0) problems.push({ event: name, reason: `it was removed, but the store holds ${n} event${n === 1 ? '' : 's'} of it (wait until they expire and are purged, or keep the event)` })
  }
  const servicesToDisconnect = new Set(services.removed)
  for (const id of services.changed) {
    if (!sameSecret((prev.services.get(id) as { secret: SiteSecret }).secret, (next.services.get(id) as { secret: SiteSecret }).secret)) servicesToDisconnect.add(id)
  }
  const usersToDisconnect = new Set(users.removed)
  for (const name of users.changed) {
    if (!sameSecret((prev.users.get(name) as UserDefinition).secret, (next.users.get(name) as UserDefinition).secret)) usersToDisconnect.add(name)
  }
  const guests = prev.guests === next.guests ? null : next.guests
  const adminRoles = sameSet(prev.adminRoles, next.adminRoles) ? null : [...next.adminRoles].sort()
  const changed = guests !== null || adminRoles !== null || [events, services, users].some((d) => d.added.length + d.removed.length + d.changed.length > 0)
  return { report: { events, services, users, guests, adminRoles, changed }, problems, servicesToDisconnect, usersToDisconnect }
}

/** The ConfigError of a refused reload, naming each offending event and why ([SITE-RELOAD-2]). */
export function siteChangeRefused (problems: readonly SiteChangeProblem[]): ConfigError {
  const list = problems.map((p) => `event "${p.event}": ${p.reason}`).join('; ')
  return new ConfigError(`site reload refused, nothing changed: ${list}`, { code: ErrorCode.SITE_INVALID })
}

/**
 * Whether `user` may receive some event under `next` that it could not under `prev` ([SITE-RELOAD-5]):
 * then its connections are told (`accessGranted`) to send again the subscriptions refused for access.
 */
export function accessGrew (prev: Site, prevUser: UserDefinition | null, next: Site, nextUser: UserDefinition | null): boolean {
  for (const def of next.events.values()) {
    if (!receivable(def, nextUser)) continue
    const old = prev.events.get(def.name)
    if (old === undefined || !receivable(old, prevUser)) return true
  }
  return false
}

/** [CLI-SUB-4] the access checks of a subscription: the access rule, and private events for users only. */
export function receivable (def: EventDefinition, user: UserDefinition | null): boolean {
  return mayReceive(def, user) && !(def.category === 'private' && user === null)
}

/** One line for the log: what a reload changed. */
export function describeSiteChange (r: SiteChangeReport): string {
  if (!r.changed) return 'site reloaded: nothing changed'
  const parts: string[] = []
  for (const [what, d] of [['events', r.events], ['services', r.services], ['users', r.users]] as const) {
    for (const [verb, names] of [['added', d.added], ['removed', d.removed], ['changed', d.changed]] as const) {
      if (names.length > 0) parts.push(`${what} ${verb}: ${names.join(', ')}`)
    }
  }
  if (r.guests !== null) parts.push(`guests ${r.guests ? 'admitted' : 'no longer admitted'}`)
  if (r.adminRoles !== null) parts.push(`admin roles: ${r.adminRoles.length === 0 ? '(none)' : r.adminRoles.join(', ')}`)
  return `site reloaded: ${parts.join('; ')}`
}

/**
 * The site structure's model ([SITE-*] in docs/protocol.md): the events a site knows, their
 * categories, limits and access rules, the services that may raise them, the users and their roles,
 * and whether guests may connect. Pure data and rules; reading and validating a site file is
 * `loadSite` in @herald/node-runtime.
 */
import { ConfigError } from './errors.js'
import type { Category } from './event.js'

/** A stored credential the site holds for a service or user: checks a secret, never shows it. */
export interface SiteSecret {
  /** True if `secret` matches. */
  verify (secret: string): Promise<boolean>
  /** The storable form (for `scrypt`: `scrypt$N$r$p$salt$hash`). */
  encode (): string
  /**
   * Whether `other` stands for the same secret ([SITE-RELOAD-3]: a site reload keeps the logins of
   * an entry whose secret did not change). Without it, the same `encode()` counts as the same.
   */
  same? (other: SiteSecret): boolean
}

/** Bounds the site file may choose within ([SITE-LIMITS-1]). */
export const SITE_LIMITS = {
  minLifetimeMs: 1000,
  maxLifetimeMs: 365 * 86_400_000,
  maxQueueSize: 10_000_000,
  maxPerRecipient: 1_000_000,
  maxPayloadBytes: 16 * 1024 * 1024,
  /** [SITE-KEY-3] most keys a keyed replacing event may keep per service. */
  maxKeys: 1_000_000
} as const

/** Defaults for what an event entry leaves out ([SITE-DEFAULTS-1]). */
export const SITE_DEFAULTS = {
  lifetimeMs: 7 * 86_400_000,
  maxQueueSize: 10_000,
  maxPerRecipient: 1000,
  maxPayloadBytes: 64 * 1024,
  /** [SITE-KEY-3] keys kept per (service, event) of a keyed replacing event. */
  maxKeys: 10_000
} as const

/**
 * Where the replacing key of a keyed event comes from ([SITE-KEY-1]): a top-level field of its JSON
 * payload (a string or a whole number), or the `key` option of `raise`.
 */
export type EventKeySpec =
  | { readonly kind: 'field', readonly field: string }
  | { readonly kind: 'raise' }

/** Bounds of a replacing key ([SITE-KEY-2]). */
export const KEY_LIMITS = {
  /** Longest key, in characters. */
  maxKeyChars: 128,
  /** Most keys one subscription may filter on ([CLI-KEY-1]). */
  maxKeysPerSubscription: 1000
} as const

/**
 * Why `key` is not a valid replacing key ([SITE-KEY-2]: 1 to 128 characters, no control
 * characters), or null if it is.
 */
export function keyProblem (key: unknown): string | null {
  if (typeof key !== 'string') return `a key must be a string, got ${key === null ? 'null' : typeof key}`
  if (key.length === 0 || key.length > KEY_LIMITS.maxKeyChars) return `a key must be 1 to ${KEY_LIMITS.maxKeyChars} characters, got ${key.length}`
  // eslint-disable-next-line no-control-regex -- control characters are what is refused
  if (/[\u0000-\u001f\u007f]/.test(key)) return 'a key must not contain control characters'
  return null
}

/**
 * The key of a field-keyed event read from its payload value ([SITE-KEY-1]): a string as it is, a
 * whole number in decimal. Null if the payload is not an object with such a field.
 */
export function keyFromValue (payload: unknown, field: string): string | null {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return null
  const v = (payload as Record<string, unknown>)[field]
  if (typeof v === 'string') return v
  if (typeof v === 'number' && Number.isSafeInteger(v)) return String(v)
  return null
}

/** Who may subscribe to an event ([SITE-ACCESS-1]). */
export type AccessRule =
  | { readonly kind: 'everyone' }
  | { readonly kind: 'authenticated' }
  | { readonly kind: 'roles', readonly roles: ReadonlySet<string> }

/** One event of the site. */
export interface EventDefinition {
  readonly name: string
  readonly category: Category
  /** Lifetime in ms (queueing and private); null for replacing events, which live until replaced. */
  readonly lifetimeMs: number | null
  /** Most events kept per (service, event) for queueing; 1 for replacing. */
  readonly maxQueueSize: number
  /** Most events kept per (service, event, recipient) for private events. */
  readonly maxPerRecipient: number
  readonly maxPayloadBytes: number
  readonly access: AccessRule
  /** [SITE-KEY-1] A keyed replacing event: the last instance is kept per (service, event, key). Absent: unkeyed. */
  readonly key?: EventKeySpec
  /** [SITE-KEY-3] Most keys kept per (service, event) of a keyed event; SITE_DEFAULTS.maxKeys when absent. */
  readonly maxKeys?: number
}

/** A service that may connect and raise events. */
export interface ServiceDefinition {
  readonly id: string
  readonly secret: SiteSecret
  readonly events: ReadonlySet<string>
}

/** A user that client endpoints may connect as. */
export interface UserDefinition {
  readonly name: string
  readonly secret: SiteSecret
  readonly roles: ReadonlySet<string>
}

/** A validated site structure. */
export interface Site {
  readonly guests: boolean
  readonly events: ReadonlyMap<string, EventDefinition>
  readonly services: ReadonlyMap<string, ServiceDefinition>
  readonly users: ReadonlyMap<string, UserDefinition>
  /** Roles whose users may use the broker's admin side: dashboard, site reload ([SITE-ADMIN-1]). Empty: no admins. */
  readonly adminRoles: ReadonlySet<string>
}

/** Whether `user` has one of the site's admin roles ([SITE-ADMIN-1]); a guest never has. */
export function isAdmin (site: Site, user: UserDefinition | null): boolean {
  if (user === null) return false
  for (const r of user.roles) if (site.adminRoles.has(r)) return true
  return false
}

/** Whether a connected principal may subscribe to `event` ([SITE-ACCESS-2]). */
export function mayReceive (event: EventDefinition, user: UserDefinition | null): boolean {
  switch (event.access.kind) {
    case 'everyone': return true
    case 'authenticated': return user !== null
    case 'roles': {
      if (user === null) return false
      for (const r of user.roles) if (event.access.roles.has(r)) return true
      return false
    }
  }
}

/** The event definitions a service may raise: what a service endpoint needs to raise offline. */
export function eventsOfService (site: Site, serviceId: string): EventDefinition[] {
  const svc = site.services.get(serviceId)
  if (svc === undefined) throw new ConfigError(`service "${serviceId}" is not in the site`)
  return [...svc.events].map((n) => site.events.get(n)).filter((e): e is EventDefinition => e !== undefined)
}

/**
 * Reading and validating a site file ([SITE-*] in docs/protocol.md) into the site model of
 * @herald/protocol, with errors naming the entry. Plain secrets are hashed here (node:crypto).
 */
import { readFile } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { HashedSecret } from './credentials.js'
import { Category, ConfigError, ErrorCode, SITE_DEFAULTS, SITE_LIMITS, formatDuration, isValidName, parseByteSize, parseDuration, type AccessRule, type EventDefinition, type EventKeySpec, type ServiceDefinition, type Site, type UserDefinition } from '@herald/protocol'

function siteError (message: string): ConfigError {
  return new ConfigError(message, { code: ErrorCode.SITE_INVALID })
}

type Obj = Record<string, unknown>

function isObj (v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function onlyKeys (o: Obj, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw siteError(`${where}: unknown key "${k}" (allowed: ${allowed.join(', ')})`)
  }
}

function list (v: unknown, where: string): unknown[] {
  if (v === undefined || v === null) return []
  if (!Array.isArray(v)) throw siteError(`${where} must be a list`)
  return v
}

function names (v: unknown, where: string): string[] {
  return list(v, where).map((x, i) => {
    if (!isValidName(x)) throw siteError(`${where}[${i}]: ${JSON.stringify(x)} is not a valid name`)
    return x
  })
}

function intIn (v: unknown, min: number, max: number, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw siteError(`${where}: ${JSON.stringify(v)} must be a whole number from ${min} to ${max}`)
  }
  return v
}

async function secretOf (o: Obj, plainKey: string, where: string): Promise<HashedSecret> {
  const hashKey = `${plainKey}Hash`
  const plain = o[plainKey]
  const hashed = o[hashKey]
  if ((plain === undefined) === (hashed === undefined)) throw siteError(`${where}: give exactly one of "${plainKey}" or "${hashKey}"`)
  if (hashed !== undefined) {
    if (typeof hashed !== 'string') throw siteError(`${where}: "${hashKey}" must be a string`)
    try {
      return HashedSecret.parse(hashed, `${where}.${hashKey}`)
    } catch (err) {
      throw siteError((err as Error).message)
    }
  }
  if (typeof plain !== 'string' || plain.length < 8) throw siteError(`${where}: "${plainKey}" must be a string of at least 8 characters`)
  return await HashedSecret.hash(plain)
}

function parseEvent (raw: unknown, where: string): EventDefinition {
  if (!isObj(raw)) throw siteError(`${where} must be a mapping`)
  onlyKeys(raw, ['name', 'category', 'lifetime', 'maxQueueSize', 'maxPerRecipient', 'maxPayload', 'access', 'key', 'maxKeys'], where)
  if (!isValidName(raw.name)) throw siteError(`${where}: name ${JSON.stringify(raw.name)} is not a valid name (1-64 of A-Z a-z 0-9 _ - ., starting with a letter or digit)`)
  const at = `${where} (${raw.name})`
  const category = raw.category
  if (category !== 'replacing' && category !== 'queueing' && category !== 'private') {
    throw siteError(`${at}: category ${JSON.stringify(category)} must be one of replacing, queueing, private`)
  }
  let lifetimeMs: number | null = null
  if (category === Category.replacing) {
    if (raw.lifetime !== undefined) throw siteError(`${at}: a replacing event has no lifetime (it lives until replaced)`)
    if (raw.maxQueueSize !== undefined) throw siteError(`${at}: a replacing event keeps one instance; maxQueueSize does not apply`)
  } else {
    lifetimeMs = raw.lifetime === undefined ? SITE_DEFAULTS.lifetimeMs : parseDurationAt(raw.lifetime, `${at}: lifetime`)
    if (lifetimeMs < SITE_LIMITS.minLifetimeMs || lifetimeMs > SITE_LIMITS.maxLifetimeMs) {
      throw siteError(`${at}: lifetime ${formatDuration(lifetimeMs)} must be from ${formatDuration(SITE_LIMITS.minLifetimeMs)} to ${formatDuration(SITE_LIMITS.maxLifetimeMs)}`)
    }
  }
  if (category !== Category.queueing && raw.maxQueueSize !== undefined && category !== Category.replacing) {
    throw siteError(`${at}: maxQueueSize applies to queueing events; private events use maxPerRecipient`)
  }
  if (category !== Category.private && raw.maxPerRecipient !== undefined) throw siteError(`${at}: maxPerRecipient applies to private events only`)
  const maxQueueSize = category === Category.replacing
    ? 1
    : raw.maxQueueSize === undefined ? SITE_DEFAULTS.maxQueueSize : intIn(raw.maxQueueSize, 1, SITE_LIMITS.maxQueueSize, `${at}: maxQueueSize`)
  const maxPerRecipient = raw.maxPerRecipient === undefined ? SITE_DEFAULTS.maxPerRecipient : intIn(raw.maxPerRecipient, 1, SITE_LIMITS.maxPerRecipient, `${at}: maxPerRecipient`)
  let maxPayloadBytes: number = SITE_DEFAULTS.maxPayloadBytes
  if (raw.maxPayload !== undefined) {
    try {
      maxPayloadBytes = parseByteSize(raw.maxPayload, `${at}: maxPayload`)
    } catch (err) {
      throw siteError((err as Error).message)
    }
    if (maxPayloadBytes > SITE_LIMITS.maxPayloadBytes) throw siteError(`${at}: maxPayload ${maxPayloadBytes} is over the limit of ${SITE_LIMITS.maxPayloadBytes} bytes`)
  }
  const def: EventDefinition = { name: raw.name, category, lifetimeMs, maxQueueSize, maxPerRecipient, maxPayloadBytes, access: parseAccess(raw.access, at) }
  if (raw.key === undefined) {
    if (raw.maxKeys !== undefined) throw siteError(`${at}: maxKeys applies to keyed events only (give "key")`)
    return def
  }
  // [SITE-KEY-1] only a replacing event has a key
  if (category !== Category.replacing) throw siteError(`${at}: only a replacing event can have a key; "${raw.name}" is ${category}`)
  const maxKeys = raw.maxKeys === undefined ? SITE_DEFAULTS.maxKeys : intIn(raw.maxKeys, 1, SITE_LIMITS.maxKeys, `${at}: maxKeys`)
  return { ...def, key: parseKey(raw.key, at), maxKeys }
}

/** [SITE-KEY-1] `key: raise` (the key is passed to raise) or `key: { field: <name> }` (a top-level payload field). */
function parseKey (v: unknown, where: string): EventKeySpec {
  if (v === 'raise') return { kind: 'raise' }
  if (isObj(v)) {
    onlyKeys(v, ['field'], `${where}: key`)
    if (typeof v.field === 'string' && /^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(v.field)) return { kind: 'field', field: v.field }
    throw siteError(`${where}: key.field ${JSON.stringify(v.field)} must name a top-level payload field (1-64 of A-Z a-z 0-9 _, not starting with a digit)`)
  }
  throw siteError(`${where}: key ${JSON.stringify(v)} must be "raise" or { field: <payload field> }`)
}

function parseDurationAt (v: unknown, where: string): number {
  try {
    return parseDuration(v, where)
  } catch (err) {
    throw siteError((err as Error).message)
  }
}

function parseAccess (v: unknown, where: string): AccessRule {
  if (v === undefined || v === 'authenticated') return { kind: 'authenticated' }
  if (v === 'everyone') return { kind: 'everyone' }
  if (isObj(v) && Array.isArray(v.roles) && Object.keys(v).length === 1) {
    const roles = names(v.roles, `${where}: access.roles`)
    if (roles.length === 0) throw siteError(`${where}: access.roles must name at least one role`)
    return { kind: 'roles', roles: new Set(roles) }
  }
  throw siteError(`${where}: access must be "everyone", "authenticated" or { roles: [ ... ] }`)
}

/** Validates a parsed site document. Plain secrets are hashed here and dropped. */
export async function parseSite (doc: unknown): Promise<Site> {
  if (!isObj(doc)) throw siteError('site: the document must be a mapping with events, services, users, guests')
  onlyKeys(doc, ['events', 'services', 'users', 'guests', 'admin', 'allowNoEvents'], 'site')
  if (doc.guests !== undefined && typeof doc.guests !== 'boolean') throw siteError('site: guests must be true or false')
  if (doc.allowNoEvents !== undefined && typeof doc.allowNoEvents !== 'boolean') throw siteError('site: allowNoEvents must be true or false')
  const events = new Map<string, EventDefinition>()
  list(doc.events, 'events').forEach((raw, i) => {
    const e = parseEvent(raw, `events[${i}]`)
    if (events.has(e.name)) throw siteError(`events[${i}]: event name "${e.name}" is defined twice`)
    events.set(e.name, e)
  })
  // [SITE-EMPTY-1] a site without events stores nothing: most likely a file that is not what it looks like
  if (events.size === 0 && doc.allowNoEvents !== true) {
    throw siteError('site: no events are defined (a broker on it would store nothing); list them under "events", or set "allowNoEvents: true" if that is what you want')
  }
  const services = new Map<string, ServiceDefinition>()
  for (const [i, raw] of list(doc.services, 'services').entries()) {
    const where = `services[${i}]`
    if (!isObj(raw)) throw siteError(`${where} must be a mapping`)
    onlyKeys(raw, ['id', 'secret', 'secretHash', 'events'], where)
    if (!isValidName(raw.id)) throw siteError(`${where}: id ${JSON.stringify(raw.id)} is not a valid name`)
    const at = `${where} (${raw.id})`
    if (services.has(raw.id)) throw siteError(`${at}: service id is defined twice`)
    const evs = names(raw.events, `${at}: events`)
    for (const e of evs) if (!events.has(e)) throw siteError(`${at}: events: "${e}" is not an event of this site`)
    services.set(raw.id, { id: raw.id, secret: await secretOf(raw, 'secret', at), events: new Set(evs) })
  }
  const users = new Map<string, UserDefinition>()
  for (const [i, raw] of list(doc.users, 'users').entries()) {
    const where = `users[${i}]`
    if (!isObj(raw)) throw siteError(`${where} must be a mapping`)
    onlyKeys(raw, ['name', 'password', 'passwordHash', 'roles'], where)
    if (!isValidName(raw.name)) throw siteError(`${where}: name ${JSON.stringify(raw.name)} is not a valid name`)
    const at = `${where} (${raw.name})`
    if (users.has(raw.name)) throw siteError(`${at}: user name is defined twice`)
    // [SITE-NAME-2] a plain MQTT login names a user or a service by its name alone
    if (services.has(raw.name)) throw siteError(`${at}: user name is also a service id; user names and service ids must differ`)
    users.set(raw.name, { name: raw.name, secret: await secretOf(raw, 'password', at), roles: new Set(names(raw.roles, `${at}: roles`)) })
  }
  return { guests: doc.guests ?? false, events, services, users, adminRoles: parseAdmin(doc.admin) }
}

// [SITE-ADMIN-1] `admin: { roles: [...] }` names the roles whose users are admins
function parseAdmin (v: unknown): ReadonlySet<string> {
  if (v === undefined) return new Set()
  if (isObj(v) && Array.isArray(v.roles) && Object.keys(v).length === 1) {
    const roles = names(v.roles, 'admin.roles')
    if (roles.length === 0) throw siteError('admin.roles must name at least one role (leave "admin" out for a site without admins)')
    return new Set(roles)
  }
  throw siteError('admin must be a mapping { roles: [ ... ] }')
}

/** Where a JSON.parse error message points, as `line L, column C`, or '' if it names no position. */
function jsonErrorAt (text: string, message: string): string {
  const m = /at position (\d+)/.exec(message)
  if (m === null) return ''
  const pos = Math.min(Number(m[1]), text.length)
  const before = text.slice(0, pos)
  const line = before.split('\n').length
  const column = pos - before.lastIndexOf('\n')
  return ` (line ${line}, column ${column})`
}

/** Whether a site file is JSON by its name ([SITE-FILE-1]): `.json` in any case. */
export function isJsonSitePath (path: string): boolean {
  return path.toLowerCase().endsWith('.json')
}

/**
 * Reads and validates a site file ([SITE-FILE-1]): a name ending in `.json` (any case) is parsed as
 * strict JSON, anything else as YAML.
 */
export async function loadSite (path: string): Promise<Site> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`site file ${path}: ${(err as Error).message}`, { code: ErrorCode.SITE_INVALID, cause: err })
  }
  // an editor's byte order mark is not part of the document
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  const json = isJsonSitePath(path)
  let doc: unknown
  try {
    doc = json ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    const message = (err as Error).message
    throw new ConfigError(`site file ${path}: not valid ${json ? 'JSON' : 'YAML'}${json ? jsonErrorAt(text, message) : ''}: ${message}`, { code: ErrorCode.SITE_INVALID, cause: err })
  }
  try {
    return await parseSite(doc)
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`site file ${path}: ${err.message}`, { code: ErrorCode.SITE_INVALID, cause: err })
    throw err
  }
}


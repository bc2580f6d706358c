/**
 * Who is on a connection ([CONN-ID-1], [CONN-ID-2]), decided once at connect from the MQTT client id,
 * user name and password, and checked against the site.
 */
import { GUEST_PRINCIPAL, isValidName, AuthError, ErrorCode, type ServiceDefinition, type Site, type UserDefinition } from '@herald/protocol'

/** A service endpoint: client id `s/<serviceId>`, user name = service id, password = its secret. */
export interface ServicePrincipal {
  readonly kind: 'service'
  readonly service: ServiceDefinition
}

/**
 * A client endpoint: client id `c/<user>/<clientName>` with that user's name and password, or
 * `c/~guest/<clientName>` with no credentials when the site admits guests. `key` is `<user>/<clientName>`.
 */
export interface ClientPrincipal {
  readonly kind: 'client'
  readonly key: string
  /** null for a guest. */
  readonly user: UserDefinition | null
}

/**
 * A plain MQTT connection ([PLAIN-LOGIN-1]): any client id not of Herald's form (`s/...`, `c/...`).
 * The user name names a site user (the read-only view), a service (ingest), or nobody (a guest,
 * where the site admits guests). Exactly one of `user` and `service` is set, or neither for a guest.
 */
export interface PlainPrincipal {
  readonly kind: 'plain'
  readonly clientId: string
  readonly user: UserDefinition | null
  readonly service: ServiceDefinition | null
}

export type Principal = ServicePrincipal | ClientPrincipal | PlainPrincipal

/** The shape of an MQTT client id, before credentials are checked. */
export type ClaimedIdentity =
  | { readonly kind: 'service', readonly serviceId: string }
  | { readonly kind: 'client', readonly user: string | null, readonly clientName: string }

/** Whether an MQTT client id is of Herald's form (`s/...` or `c/...`, valid or not); any other is a plain MQTT client. */
export function isHeraldClientId (id: string): boolean {
  return id.startsWith('s/') || id.startsWith('c/')
}

/** Parses an MQTT client id into the identity it claims, or null if it is not a Herald client id. */
export function parseClientId (id: string): ClaimedIdentity | null {
  const parts = id.split('/')
  if (parts[0] === 's' && parts.length === 2 && isValidName(parts[1])) return { kind: 'service', serviceId: parts[1] }
  if (parts[0] === 'c' && parts.length === 3 && isValidName(parts[2])) {
    if (parts[1] === GUEST_PRINCIPAL) return { kind: 'client', user: null, clientName: parts[2] }
    if (isValidName(parts[1])) return { kind: 'client', user: parts[1], clientName: parts[2] }
  }
  return null
}

/**
 * Runs one secret check for a claimed name (`s/<serviceId>` or the user name): resolves to its
 * result, or rejects to refuse the attempt unchecked (login throttling, [AUTH-THROTTLE-1]).
 */
export type SecretGate = (name: string, check: () => Promise<boolean>) => Promise<boolean>

const ungated: SecretGate = (_name, check) => check()

/**
 * Checks a connect attempt against the site ([AUTH-CONNECT-1]). Every secret check (one scrypt)
 * goes through `gate`. Resolves to the principal, or rejects
 * with an AuthError: BAD_CREDENTIALS for an unknown name or wrong secret (the same answer for both),
 * NOT_AUTHORIZED for a guest when the site admits none or a malformed client id.
 */
export async function authenticate (site: Site, clientId: string, username: string | undefined, password: Buffer | undefined, gate: SecretGate = ungated): Promise<Principal> {
  if (!isHeraldClientId(clientId)) return await authenticatePlain(site, clientId, username, password, gate)
  const claimed = parseClientId(clientId)
  if (claimed === null) throw new AuthError(ErrorCode.NOT_AUTHORIZED, `client id ${JSON.stringify(clientId)} is not of the form s/<service> or c/<user>/<name>`)
  const secret = password?.toString('utf8') ?? ''
  if (claimed.kind === 'service') {
    const service = site.services.get(claimed.serviceId)
    const known = service !== undefined && username === claimed.serviceId
    // an unknown id is hashed anyway (against any secret) so that it takes as long as a wrong secret
    const against = known ? service.secret : site.services.values().next().value?.secret
    const ok = await gate(`s/${claimed.serviceId}`, async () => (await against?.verify(secret)) === true && known)
    if (!ok || service === undefined) throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad service id or secret')
    return { kind: 'service', service }
  }
  if (claimed.user === null) {
    if (!site.guests) throw new AuthError(ErrorCode.NOT_AUTHORIZED, 'this site admits no guests')
    if (username !== undefined && username !== '') throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'a guest client id carries no user name')
    return { kind: 'client', key: `${GUEST_PRINCIPAL}/${claimed.clientName}`, user: null }
  }
  const user = site.users.get(claimed.user)
  const known = user !== undefined && username === claimed.user
  const against = known ? user.secret : site.users.values().next().value?.secret
  const ok = await gate(claimed.user, async () => (await against?.verify(secret)) === true && known)
  if (!ok || user === undefined) throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad user name or password')
  return { kind: 'client', key: `${user.name}/${claimed.clientName}`, user }
}

/**
 * [PLAIN-LOGIN-1] A plain MQTT client logs in with a user's name and password, a service's id and
 * secret ([SITE-NAME-2]: one name means one of them), or no user name as a guest. An unknown name is
 * hashed anyway, so that it takes as long as a wrong secret, and gets the same answer.
 */
async function authenticatePlain (site: Site, clientId: string, username: string | undefined, password: Buffer | undefined, gate: SecretGate): Promise<PlainPrincipal> {
  const secret = password?.toString('utf8') ?? ''
  if (username === undefined || username === '') {
    if (!site.guests) throw new AuthError(ErrorCode.NOT_AUTHORIZED, 'this site admits no guests: log in with a user name and password')
    if (secret !== '') throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'a password without a user name')
    return { kind: 'plain', clientId, user: null, service: null }
  }
  const service = site.services.get(username)
  if (service !== undefined) {
    const ok = await gate(`s/${service.id}`, async () => await service.secret.verify(secret))
    if (!ok) throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad user name or password')
    return { kind: 'plain', clientId, user: null, service }
  }
  const user = site.users.get(username)
  const against = user?.secret ?? site.users.values().next().value?.secret ?? site.services.values().next().value?.secret
  const ok = await gate(username, async () => (await against?.verify(secret)) === true && user !== undefined)
  if (!ok || user === undefined) throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad user name or password')
  return { kind: 'plain', clientId, user, service: null }
}

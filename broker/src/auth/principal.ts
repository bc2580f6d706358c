/**
 * Who is on a connection ([CONN-ID-1], [CONN-ID-2]), decided once at connect from the MQTT client id,
 * user name and password, and checked against the site.
 */
import { GUEST_PRINCIPAL, isValidName, AuthError, ErrorCode, type ServiceDefinition, type Site, type UserDefinition } from '@herald/shared'

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

export type Principal = ServicePrincipal | ClientPrincipal

/** The shape of an MQTT client id, before credentials are checked. */
export type ClaimedIdentity =
  | { readonly kind: 'service', readonly serviceId: string }
  | { readonly kind: 'client', readonly user: string | null, readonly clientName: string }

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
 * Checks a connect attempt against the site ([AUTH-CONNECT-1]). Resolves to the principal, or rejects
 * with an AuthError: BAD_CREDENTIALS for an unknown name or wrong secret (the same answer for both),
 * NOT_AUTHORIZED for a guest when the site admits none or a malformed client id.
 */
export async function authenticate (site: Site, clientId: string, username: string | undefined, password: Buffer | undefined): Promise<Principal> {
  const claimed = parseClientId(clientId)
  if (claimed === null) throw new AuthError(ErrorCode.NOT_AUTHORIZED, `client id ${JSON.stringify(clientId)} is not of the form s/<service> or c/<user>/<name>`)
  const secret = password?.toString('utf8') ?? ''
  if (claimed.kind === 'service') {
    const service = site.services.get(claimed.serviceId)
    if (service === undefined || username !== claimed.serviceId) {
      // hash anyway so that an unknown id takes as long as a wrong secret
      await site.services.values().next().value?.secret.verify(secret)
      throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad service id or secret')
    }
    if (!(await service.secret.verify(secret))) throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad service id or secret')
    return { kind: 'service', service }
  }
  if (claimed.user === null) {
    if (!site.guests) throw new AuthError(ErrorCode.NOT_AUTHORIZED, 'this site admits no guests')
    if (username !== undefined && username !== '') throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'a guest client id carries no user name')
    return { kind: 'client', key: `${GUEST_PRINCIPAL}/${claimed.clientName}`, user: null }
  }
  const user = site.users.get(claimed.user)
  if (user === undefined || username !== claimed.user) {
    await site.users.values().next().value?.secret.verify(secret)
    throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad user name or password')
  }
  if (!(await user.secret.verify(secret))) throw new AuthError(ErrorCode.BAD_CREDENTIALS, 'bad user name or password')
  return { kind: 'client', key: `${user.name}/${claimed.clientName}`, user }
}

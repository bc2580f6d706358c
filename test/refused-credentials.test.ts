/**
 * Refused credentials are loud ([CONN-AUTH-2]): an `error` event naming the service or user, once
 * per run of refusals although the endpoint goes on retrying; without a listener an error-level log
 * line; and in the CLI roles an error-level log line.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { AuthError, ErrorCode, type HeraldError, type Logger } from '@herald/protocol'
import { waitFor } from '@herald/protocol/testing'
import { gatewayYaml } from './support/gateway-yaml.js'
import { Harness } from './support/harness.js'
import { startGatewayProcess, type Proc } from './support/processes.js'
import { SECRETS } from './support/site.js'

function recordingLogger (): Logger & { errors: string[] } {
  const errors: string[] = []
  return { errors, debug () {}, info () {}, warn () {}, error (_o, msg) { errors.push(msg ?? '') } }
}

describe('refused credentials', () => {
  let h: Harness
  afterEach(async () => { await h.close() })

  it('a service endpoint with a wrong secret emits one AuthError naming the service, and keeps retrying', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    let attempts = 0
    const errors: HeraldError[] = []
    const svc = await h.service(broker.url, 'svc-a', { secret: 'wrong-secret', memoryOnly: true })
    svc.on('error', (e) => { errors.push(e) })
    svc.on('status', (s) => { if (s.state === 'connecting') attempts++ })
    await svc.raise('readings', { i: 1 })
    await waitFor(() => attempts >= 3, 'three connection attempts')
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(AuthError)
    expect(errors[0]?.code).toBe(ErrorCode.BAD_CREDENTIALS)
    expect(errors[0]?.message).toBe(`the broker at ${broker.url} refused the credentials of service "svc-a" (BAD_CREDENTIALS); retrying, events are kept`)
    expect(svc.status.backlog).toBe(1)
  })

  it('without an error listener, the service endpoint logs it once at error level', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const logger = recordingLogger()
    let attempts = 0
    const svc = await h.service(broker.url, 'svc-a', { secret: 'wrong-secret', memoryOnly: true, logger })
    svc.on('status', (s) => { if (s.state === 'connecting') attempts++ })
    await waitFor(() => attempts >= 3, 'three connection attempts')
    expect(logger.errors).toEqual([`credentials refused: the broker at ${broker.url} refused the credentials of service "svc-a" (BAD_CREDENTIALS); retrying, events are kept`])
  })

  it('a client endpoint with a wrong password emits one AuthError naming the user', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const errors: HeraldError[] = []
    const client = h.client(broker.url, 'alice', 'app', { password: 'not-her-password' })
    client.on('error', (e) => { errors.push(e) })
    await waitFor(() => errors.length >= 1, 'an error event')
    expect(errors[0]).toBeInstanceOf(AuthError)
    expect(errors[0]?.message).toBe(`the broker at ${broker.url} refused the credentials of user "alice" (BAD_CREDENTIALS); retrying`)
  })

  it('herald gateway with a wrong secret logs an error-level line naming the service', async () => {
    h = await Harness.create()
    const broker = await h.broker()
    const config = join(h.dir, 'gateway.yaml')
    const yaml = gatewayYaml(broker.url, join(h.dir, 'gw'), ['tcp://127.0.0.1:9'], '  - { name: readings, category: queueing, lifetime: 1d }', `mapping:
  - on: STATE
    raise: readings
    payload: { serial: $serial }
`).replace(`secret: ${SECRETS['svc-a']}`, 'secret: wrong-secret-1')
    await writeFile(config, yaml)
    const gateway: Proc = await startGatewayProcess(config)
    h.onClose(() => gateway.kill())
    const line = await gateway.waitLine((l) => l.includes('refused the credentials'), 60_000)
    const entry = JSON.parse(line) as { level: number, code: string, msg: string }
    expect(entry.level).toBe(50) // pino's error level
    expect(entry.code).toBe(ErrorCode.BAD_CREDENTIALS)
    expect(entry.msg).toBe(`the broker at ${broker.url} refused the credentials of service "svc-a" (BAD_CREDENTIALS); retrying, events are kept`)
  })
})

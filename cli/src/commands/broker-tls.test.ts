import { describe, expect, it } from 'vitest'
import { ConfigError } from '@herald/protocol'
import { brokerTlsFiles } from './broker.js'

describe('herald broker TLS flags', () => {
  it('makes TLS files from --tls-cert and --tls-key, with --tls-ca and --tls-client-auth', () => {
    expect(brokerTlsFiles({})).toBeUndefined()
    expect(brokerTlsFiles({ tlsCert: 'b.crt', tlsKey: 'b.key' })).toEqual({ certFile: 'b.crt', keyFile: 'b.key', caFile: undefined, clientAuth: false })
    expect(brokerTlsFiles({ tlsCert: 'b.crt', tlsKey: 'b.key', tlsCa: 'ca.crt', tlsClientAuth: true })).toEqual({ certFile: 'b.crt', keyFile: 'b.key', caFile: 'ca.crt', clientAuth: true })
  })

  it('refuses flags without the ones they need, and --insecure with TLS', () => {
    const cases: Array<[Parameters<typeof brokerTlsFiles>[0], RegExp]> = [
      [{ tlsKey: 'b.key' }, /--tls-key, --tls-ca and --tls-client-auth need --tls-cert/],
      [{ tlsClientAuth: true }, /need --tls-cert/],
      [{ tlsCert: 'b.crt' }, /--tls-cert needs --tls-key/],
      [{ tlsCert: 'b.crt', tlsKey: 'b.key', insecure: true }, /--insecure is for plain MQTT/]
    ]
    for (const [flags, message] of cases) {
      expect(() => brokerTlsFiles(flags)).toThrow(message)
      expect(() => brokerTlsFiles(flags)).toThrow(ConfigError)
    }
  })
})

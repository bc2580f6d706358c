/** publishHeader + body parses as the PUBLISH it says, at every remaining-length size (mqtt-packet's parser). */
import { describe, expect, it } from 'vitest'
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet'
import { publishHeader } from './publish-header.js'

function parse (bytes: Buffer): Packet[] {
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const out: Packet[] = []
  parser.on('packet', (p: Packet) => out.push(p))
  parser.on('error', (err: Error) => { throw err })
  parser.parse(bytes)
  return out
}

describe('publishHeader', () => {
  it.each([0, 1, 100, 127 - 9, 128, 16_383, 16_384, 2_097_151, 2_097_152])('a body of %i bytes, QoS 0 and QoS 1 retained', (n) => {
    const topic = Buffer.from('herald/v1/events/t/s')
    const body = Buffer.alloc(n, 0x61)
    const [q0] = parse(Buffer.concat([publishHeader(topic, n), body])) as IPublishPacket[]
    expect([q0?.topic, q0?.qos, q0?.retain, (q0?.payload as Buffer).length]).toEqual(['herald/v1/events/t/s', 0, false, n])
    const [q1] = parse(Buffer.concat([publishHeader(topic, n, 1, true, 65_535), body])) as IPublishPacket[]
    expect([q1?.qos, q1?.retain, q1?.messageId, (q1?.payload as Buffer).length]).toEqual([1, true, 65_535, n])
  })
})

/**
 * The fixed header, topic and (QoS 1) packet id of an MQTT 3.1.1 PUBLISH (3.3) carrying `bodyBytes`,
 * for the broker's own writes straight onto a connection (connection-writer.ts, the plain view):
 * the body follows it as a second write, never copied into it.
 */
export function publishHeader (topic: Buffer, bodyBytes: number, qos: 0 | 1 = 0, retain = false, id = 0): Buffer {
  let remaining = 2 + topic.length + (qos === 1 ? 2 : 0) + bodyBytes
  const len: number[] = []
  do {
    let byte = remaining % 128
    remaining = Math.floor(remaining / 128)
    if (remaining > 0) byte |= 0x80
    len.push(byte)
  } while (remaining > 0)
  const h = Buffer.allocUnsafe(1 + len.length + 2 + topic.length + (qos === 1 ? 2 : 0))
  h[0] = 0x30 | (qos << 1) | (retain ? 1 : 0)
  for (let i = 0; i < len.length; i++) h[1 + i] = len[i] as number
  h.writeUInt16BE(topic.length, 1 + len.length)
  topic.copy(h, 3 + len.length)
  if (qos === 1) h.writeUInt16BE(id, 3 + len.length + topic.length)
  return h
}

/**
 * One WebSocket connection as the duplex byte stream `broker.handle` takes ([CONN-WS-3]): the
 * binary messages' bytes in, one binary message per write (or per corked batch) out. MQTT packets
 * need not be aligned on message boundaries either way; the MQTT parser sees a byte stream.
 *
 * Back-pressure is the socket's: a write's callback runs once ws has handed the message to the
 * TCP socket and the socket has flushed it, so `writableLength` counts what waits unsent and
 * 'drain' comes when the peer reads again, as with a TCP socket (the broker's ConnectionWriter
 * relies on it). Reading stops (the socket is paused) while the broker has not taken what came.
 */
import { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'

/** Unsent bytes in the socket above which a closing connection is cut, not sent a close frame behind them. */
const GRACEFUL_CLOSE_MAX_QUEUED = 64 * 1024

/** WebSocket close codes (RFC 6455, 7.4.1). */
export const WsCloseCode = Object.freeze({
  normal: 1000,
  protocolError: 1002,
  unsupportedData: 1003
})

export class WebSocketDuplex extends Duplex {
  /** The peer's address, read by the broker's per-address limits and login throttle. */
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined

  constructor (private readonly ws: WebSocket, peer: { remoteAddress?: string | undefined, remotePort?: number | undefined }) {
    super({ allowHalfOpen: false, emitClose: true })
    this.remoteAddress = peer.remoteAddress
    this.remotePort = peer.remotePort
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (this.destroyed) return
      if (!isBinary) {
        // [CONN-WS-3] MQTT travels in binary messages only; anything else closes the connection
        ws.close(WsCloseCode.unsupportedData, 'MQTT over WebSocket takes binary messages only')
        this.destroy(new Error('a text WebSocket message (MQTT over WebSocket takes binary messages only)'))
        return
      }
      if (!this.push(data)) ws.pause()
    })
    // a frame ws refuses (too large, malformed, ...): ws has already sent the close frame and its code
    ws.on('error', (err) => { this.destroy(err) })
    ws.once('close', () => {
      if (this.destroyed) return
      this.push(null)
      this.destroy()
    })
  }

  override _read (): void {
    if (this.ws.isPaused) this.ws.resume()
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.ws.send(chunk, { binary: true }, callback)
  }

  /** A corked batch (mqtt-packet writes a packet in several pieces) goes as one message. */
  override _writev (chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    this.ws.send(chunks.length === 1 ? (chunks[0] as { chunk: Buffer }).chunk : Buffer.concat(chunks.map((c) => c.chunk)), { binary: true }, callback)
  }

  override _final (callback: (err?: Error | null) => void): void {
    this.ws.close(WsCloseCode.normal)
    callback()
  }

  override _destroy (err: Error | null, callback: (err?: Error | null) => void): void {
    const ws = this.ws
    if (ws.readyState === ws.OPEN) {
      // a peer that reads gets a close frame (the listener's closeTimeout bounds its answer); one
      // whose socket is backed up is cut at once, dropping what it never read
      const socket = (ws as unknown as { _socket: { writableLength: number } | null })._socket
      if (socket !== null && socket.writableLength <= GRACEFUL_CLOSE_MAX_QUEUED) ws.close(err === null ? WsCloseCode.normal : WsCloseCode.protocolError)
      else ws.terminate()
    } else if (ws.readyState === ws.CONNECTING) {
      ws.terminate()
    }
    callback(err)
  }
}

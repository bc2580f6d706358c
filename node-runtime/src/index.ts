/**
 * @herald/node-runtime: the parts of Herald that need Node. The MQTT link over TCP, TLS and
 * WebSocket, TLS options, site-file loading, hashed credentials, the SQLite WAL checkpointer and
 * private files. The protocol itself is @herald/protocol.
 */
export * from './credentials.js'
export * from './site-file.js'
export * from './mqtt-transport.js'
export * from './tls.js'
export * from './sqlite-synchronous.js'
export * from './wal-checkpointer.js'
export * from './private-files.js'
export * from './log-format.js'
export * from './metrics-server.js'

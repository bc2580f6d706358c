/**
 * @herald/protocol: Herald's browser-safe core. The event and site model, the frame codec on
 * Uint8Array, topics, typed errors, option checks, a clock that owns timers, and the transport
 * interface endpoints talk through. No Node built-ins (its build has no Node types).
 */
export * from './errors.js'
export * from './names.js'
export * from './duration.js'
export * from './event.js'
export * from './binary.js'
export * from './codec.js'
export * from './topics.js'
export * from './site-model.js'
export * from './clock.js'
export * from './logger.js'
export * from './backoff.js'
export * from './options.js'
export * from './typed-emitter.js'
export * from './async-queue.js'
export * from './status-feed.js'
export * from './transport.js'
export * from './link.js'

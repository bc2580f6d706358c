export * from './position-store-conformance.js'
export * from './dead-letter-store-conformance.js'

export * from './event-store-conformance.js'

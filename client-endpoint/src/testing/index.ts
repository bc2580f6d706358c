export * from './position-store-conformance.js'

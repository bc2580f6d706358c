export * from './service-persistence-conformance.js'

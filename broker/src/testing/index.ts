export * from './event-store-conformance.js'
export * from './raw-mqtt.js'

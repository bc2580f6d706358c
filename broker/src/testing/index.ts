export * from './event-store-conformance.js'
export * from './raw-mqtt.js'
export * from './raw-ws-mqtt.js'

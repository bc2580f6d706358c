/**
 * `@herald/gateway`: device lines in, events out (docs/gateway.md). A gateway reads reports from
 * devices on serial lines or serial device servers, maps them to events, and raises them through a
 * service endpoint, exactly once.
 */
export { Gateway, startGateway, markKey, GATEWAY_PIPELINE, type GatewayOptions, type GatewayStatus, type GatewayEvents, type DeviceLineStatus, type DeviceCounters } from './gateway.js'
export { loadGatewayConfig, parseGatewayConfig, GATEWAY_LIMITS, type GatewayConfig, type DeviceConfig, type LineTiming } from './config/gateway-config.js'
export { parseDeviceUrl, formatDeviceAddress, type DeviceAddress, type SerialAddress, type TcpAddress } from './config/device-url.js'
export { mapFrame, parseValueSource, META_NAMES, FIELD_TYPES, type MappingRule, type MappedRaise, type MappingResult, type DeviceIdentity, type ValueSource } from './mapping.js'
export { DeviceTracker, type Verdict } from './device-tracker.js'
export { PortState } from './device-port.js'
export { gatewayCommand } from './command.js'
export { gatewayMetricsRegistry, gatewayProblem } from './metrics.js'

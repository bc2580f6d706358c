/** Gateway configuration files for tests: service svc-a of the test site, on the given device lines. */
import { SECRETS } from './site.js'

/**
 * The YAML of a gateway raising as svc-a: `events` and `rest` (lines, status, mapping) are YAML
 * text, written as they are.
 */
export function gatewayYaml (brokerUrl: string, data: string, devices: readonly string[], events: string, rest: string): string {
  return `service:
  id: svc-a
  secret: ${SECRETS['svc-a']}
broker: ${brokerUrl}
data: ${data}
events:
${events}
devices:
${devices.map((u) => `  - url: ${u}`).join('\n')}
${rest}`
}

/**
 * The device chain's gateway as svc-a: readings from STATE, alarms from ALARM and CLEAR, each payload
 * naming the report (serial, boot, seq), so a client can count every report exactly.
 */
export function deviceChainYaml (brokerUrl: string, data: string, devices: readonly string[], statusInterval: string): string {
  return gatewayYaml(brokerUrl, data, devices, `  - { name: readings, category: queueing, lifetime: 1d }
  - { name: alarms, category: queueing, lifetime: 7d }`, `lines:
  reopenInitial: 50ms
  reopenMax: 500ms
  staleAfter: 2s
status:
  interval: ${statusInterval}
mapping:
  - on: STATE
    raise: readings
    payload: { serial: $serial, boot: $boot, seq: $seq }
  - on: ALARM
    raise: alarms
    payload: { serial: $serial, boot: $boot, seq: $seq, type: $type }
  - on: CLEAR
    raise: alarms
    payload: { serial: $serial, boot: $boot, seq: $seq, type: $type }
`)
}

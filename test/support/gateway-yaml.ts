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

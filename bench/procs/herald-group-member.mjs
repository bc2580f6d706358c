// A Herald consumer group member ([GROUP-*]) for scenario 10. argv[2] is JSON:
//   { url, user, password, clientName, event, group, segments }
// Joins `group` on `event`; prints {"ready"} once joined, {"progress": n} at most every 50 ms while
// it handles events, and {"result": {first, last, received, redelivered}} on the command "report".
import { ClientEndpoint } from '@herald/client-endpoint'
import { command, nowMs, report } from './child.mjs'

process.on('SIGTERM', () => { process.exit(0) })

const a = JSON.parse(process.argv[2])
let received = 0
let redelivered = 0
let first = null
let last = null
const ep = new ClientEndpoint({ url: a.url, clientName: a.clientName, user: a.user, password: a.password, reconnectInitialMs: 20, reconnectMaxMs: 200 }).start()
ep.on('error', (e) => { process.stderr.write(`${a.clientName} error ${e.code} ${e.message}\n`) })
await ep.subscribe(a.event, { group: a.group, segments: a.segments }, (e) => {
  const t = nowMs()
  first ??= t
  last = t
  received++
  if (e.redelivered) redelivered++
})
report({ ready: true })
let told = 0
setInterval(() => {
  if (received !== told) report({ progress: received })
  told = received
}, 50)
await command('report')
report({ result: { first, last, received, redelivered } })

// A writing process for the SQLite crash test (sqlite-service-persistence.test.ts), run against the
// built package (npm run build). argv[2] is JSON: { path, devices }.
// Opens the persistence file and resumes after the highest frame its marks record, then turns
// frames into appends until it is killed: frame k comes from device k % devices and becomes k % 3
// events (none for one frame in three: a marks-only append) with payload "<k>/<part>", appended with
// the mark "device-<k % devices>" = "<k>". Prints "start <k>" with the first frame, and "ok <k>" as
// soon as frame k's append resolved (writes to a pipe are synchronous: a printed line survives a
// SIGKILL right after it). Appends go in groups of 1 to 40 concurrent calls, so commits vary in size.
import { createSqliteServicePersistence } from '@herald/service-endpoint'
import { PayloadKind } from '@herald/protocol'

const a = JSON.parse(process.argv[2])
const p = await createSqliteServicePersistence({ path: a.path })
let frame = 0
for (const value of p.marks().values()) frame = Math.max(frame, Number(value))
let seq = p.lastSeq()
process.stdout.write(`start ${frame + 1}\n`)
for (let round = 1; ; round++) {
  const calls = []
  for (let i = 0; i < 1 + (round * 7) % 40; i++) {
    const k = ++frame
    const events = []
    for (let part = 0; part < k % 3; part++) {
      events.push({ seq: ++seq, name: 'frame', category: 'queueing', raisedAt: Date.now(), isNull: false, recipient: null, payloadKind: PayloadKind.bytes, payload: Buffer.from(`${k}/${part}`) })
    }
    calls.push(p.append(events, [], new Map([[`device-${k % a.devices}`, String(k)]])).then(() => { process.stdout.write(`ok ${k}\n`) }))
  }
  await Promise.all(calls)
}

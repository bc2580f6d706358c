// What the client's position durability costs per event, without a broker (issue 8, item 8):
// a SqlitePositionStore file in a temp dir, handled the way a ClientEndpoint does it — per batch of
// B received events one reserve() ([CLI-POS-5]), then per event one advance() ([CLI-POS-4]) — in
// both modes, for several batch sizes. B = 1 is a client at a low rate (every event its own batch);
// at full load a batch is up to the window (1,000).
//
//   npm run build && node bench/position-store.mjs [--events 200000]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { SqlitePositionStore } from '@herald/client-endpoint'

const { values } = parseArgs({ options: { events: { type: 'string', default: '200000' } } })
const total = Number(values.events)
const dir = mkdtempSync(join(tmpdir(), 'herald-positions-bench-'))

function measure (durability, batch) {
  const n = Math.max(batch, Math.min(total, batch * 20_000)) // B = 1: at most 20,000 fsyncs
  const path = join(dir, `${durability}-${batch}.db`)
  const store = new SqlitePositionStore({ database: path, durability })
  const t0 = process.hrtime.bigint()
  const c0 = process.cpuUsage()
  let p = 0
  for (let done = 0; done < n; done += batch) {
    store.reserve('readings', p + batch)
    for (let k = 0; k < batch; k++) {
      store.advance('readings', p, p + 1)
      p++
    }
  }
  store.commit('readings', p)
  const wall = Number(process.hrtime.bigint() - t0) / 1000 / n
  const cpu = process.cpuUsage(c0)
  store.close()
  return { durability, batch, events: n, wallUsPerEvent: Math.round(wall * 100) / 100, cpuUsPerEvent: Math.round((cpu.user + cpu.system) / n * 100) / 100 }
}

measure('process-crash', 100) // warm-up, not reported
const rows = []
for (const batch of [1, 10, 100, 1000]) {
  for (const durability of ['process-crash', 'power-loss']) rows.push(measure(durability, batch))
}
rmSync(dir, { recursive: true, force: true })
console.log('| events per batch | durability | events | wall µs/event | CPU µs/event |')
console.log('|--:|---|--:|--:|--:|')
for (const r of rows) console.log(`| ${r.batch} | ${r.durability} | ${r.events.toLocaleString('en')} | ${r.wallUsPerEvent} | ${r.cpuUsPerEvent} |`)

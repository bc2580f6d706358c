import { heraldRun } from './lib/runs.mjs'
import { startPostgres } from './lib/postgres.mjs'
const pg = await startPostgres()
const deadline = Date.now() + 120_000
for (const [name, brokers] of [['sqlite', 1], ['pg1', 1]]) {
  const storeUrl = name === 'sqlite' ? null : await pg.database()
  const r = await heraldRun({ services: 1, serviceProcs: 1, count: 5000, rate: 1000, clients: 1, clientProcs: 1, deadline, storeUrl, brokers })
  console.log(name, JSON.stringify(r.latency), r.perSecond)
}
await pg.remove()

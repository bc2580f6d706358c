// Scenario 10's runs: a consumer group of member processes ([GROUP-*]) on one fresh Herald broker.
import { join } from 'node:path'
import { BenchError, killEach, nodeChild } from './proc.mjs'
import { EVENT, USER, USER_PASSWORD, proc, startHerald } from './brokers.mjs'
import { heraldWorkspace, serviceChildren } from './runs.mjs'

/**
 * `services` services (in `serviceProcs` processes) raise `count` events each; `members` member
 * processes of one group with `segments` segments handle them. Throughput counts from the first
 * raise() call to the last handler call of any member; each event is counted once per handling.
 */
export async function heraldGroupRun ({ services, serviceProcs, count, members, segments = 16, deadline }) {
  const ws = await heraldWorkspace(services)
  const children = []
  let broker = null
  try {
    broker = await startHerald({ site: ws.site, dataDir: join(ws.dir, 'data') }, deadline)
    const ms = Array.from({ length: members }, (_, i) => nodeChild(`herald-group-member ${i}`, proc('herald-group-member.mjs'), {
      url: broker.url, user: USER, password: USER_PASSWORD, clientName: `member-${i}`, event: EVENT, group: 'bench', segments
    }))
    children.push(...ms)
    await Promise.all(ms.map((c) => c.waitFor('ready', 'member joined', deadline)))
    const sv = serviceChildren({ url: broker.url, dir: ws.dir, services, procs: serviceProcs, count, window: 5000, maxUnacked: 4000 })
    children.push(...sv)
    await Promise.all(sv.map((c) => c.waitFor('ready', 'services online', deadline)))
    for (const s of sv) s.send('go')
    const raised = (await Promise.all(sv.map((c) => c.waitFor('raised', 'every raise() resolved', deadline)))).map((m) => m.raised)
    const total = services * count
    const progress = (c) => {
      for (let i = c.lines.length - 1; i >= 0; i--) if (typeof c.lines[i] === 'object' && c.lines[i] !== null && 'progress' in c.lines[i]) return c.lines[i].progress
      return 0
    }
    while (ms.reduce((n, c) => n + progress(c), 0) < total) {
      if (Date.now() > deadline) throw new BenchError(`group of ${members}: ${ms.reduce((n, c) => n + progress(c), 0)} of ${total} events within the deadline`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    for (const c of ms) c.send('report')
    const results = (await Promise.all(ms.map((c) => c.waitFor('result', 'member result', deadline)))).map((m) => m.result)
    const start = Math.min(...raised.map((r) => r.start))
    const end = Math.max(...results.filter((r) => r.last !== null).map((r) => r.last))
    const received = results.reduce((n, r) => n + r.received, 0)
    return { events: total, received, redelivered: results.reduce((n, r) => n + r.redelivered, 0), perMember: results.map((r) => r.received), seconds: (end - start) / 1000, perSecond: received / ((end - start) / 1000) }
  } finally {
    await killEach(children)
    if (broker !== null) await broker.child.kill()
    await ws.dispose()
  }
}

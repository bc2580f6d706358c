// Summarises V8 CPU profiles (node --cpu-prof, or `npm run bench -- --cpu-prof`): the functions with
// the most self time, per profile file.
//   node bench/profile-top.mjs [--top 15] <file.cpuprofile | directory> ...
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { basename, join, relative } from 'node:path'
import { parseArgs } from 'node:util'

const { values, positionals } = parseArgs({ options: { top: { type: 'string', default: '15' } }, allowPositionals: true })
const top = Number(values.top)
const files = positionals.flatMap((p) => statSync(p).isDirectory()
  ? readdirSync(p).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(p, f))
  : [p])
if (files.length === 0) {
  process.stderr.write('usage: node bench/profile-top.mjs [--top N] <file.cpuprofile | directory> ...\n')
  process.exit(2)
}

const where = (cf) => {
  if (cf.url === '') return ''
  const url = cf.url.replace(/^file:\/\//, '')
  const short = url.includes('/node_modules/') ? url.slice(url.lastIndexOf('/node_modules/') + 14) : relative(process.cwd(), url)
  return ` ${short}:${cf.lineNumber + 1}`
}

for (const file of files) {
  const prof = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  const self = new Map()
  // time deltas belong to the sample they follow
  for (let i = 0; i < prof.samples.length; i++) {
    const node = byId.get(prof.samples[i])
    const key = `${node.callFrame.functionName || '(anonymous)'}${where(node.callFrame)}`
    self.set(key, (self.get(key) ?? 0) + (prof.timeDeltas[i + 1] ?? 0))
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0)
  const idle = self.get('(idle)') ?? 0
  process.stdout.write(`\n${basename(file)}: ${(total / 1e6).toFixed(1)} s sampled, ${(100 * (total - idle) / total).toFixed(0)}% busy\n`)
  for (const [key, us] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${(100 * us / total).toFixed(1).padStart(6)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}\n`)
  }
}

#!/usr/bin/env node
// Bundles the browser entry (dist/browser/index.js, built by `tsc -b`) into one ES module a page can
// import: dist/browser/herald-client.js, minified, with a source map. Run by `npm run build`.
// Prints its size, raw and gzipped (the README quotes it).
import { readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const outfile = join(root, 'dist/browser/herald-client.js')
await build({
  entryPoints: [join(root, 'dist/browser/index.js')],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  // error classes keep their names (err.name: AuthError, ...), as in Node
  keepNames: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning'
})
const code = readFileSync(outfile)
process.stdout.write(`${relative(process.cwd(), outfile)}: ${(code.length / 1024).toFixed(1)} KiB, ${(gzipSync(code, { level: 9 }).length / 1024).toFixed(1)} KiB gzipped\n`)

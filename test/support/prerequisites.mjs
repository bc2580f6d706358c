#!/usr/bin/env node
/**
 * The system packages the tests need, in one list, checked before anything else runs: `npm test`
 * runs this file first, and vitest runs it as its globalSetup (vitest.config.ts), so a missing
 * tool stops the run within a second with one line naming the package to install, instead of
 * tests timing out minutes later. Add a tool here when a test starts to need one.
 *
 * Plain JavaScript, so that `node test/support/prerequisites.mjs` works before anything is built
 * (`--missing-packages` prints the packages to install, for .ci/run); types in prerequisites.d.mts.
 */
import { accessSync, constants, readdirSync, statSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { pathToFileURL } from 'node:url'

/** What the tests run, the Debian/Ubuntu package that has it, and which tests need it. */
export const PREREQUISITES = Object.freeze([
  { command: 'socat', package: 'socat', usedBy: 'the serial-line tests (pty pairs)' },
  { command: 'openssl', package: 'openssl', usedBy: 'the TLS tests (certificates)' },
  { command: 'cc', package: 'gcc', usedBy: 'the power-cut tests (an LD_PRELOAD library that keeps files at their last fsync)' },
  { command: 'chromium', package: 'chromium', usedBy: 'the browser tests (headless Chromium driven by playwright-core, test/support/browser.ts)' },
  { command: 'mosquitto_sub', package: 'mosquitto-clients', usedBy: 'the plain-MQTT view tests (an ordinary MQTT subscriber)' },
  { command: 'mosquitto_pub', package: 'mosquitto-clients', usedBy: 'the plain-MQTT ingest tests (an ordinary MQTT publisher)' },
  // Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<version>/bin (postgresBinDirs).
  // Only the PostgreSQL tests need it: a missing one does not stop the run, those tests fail at
  // their start with this line (test/support/postgres.ts), and .ci/run installs it like the others.
  { command: 'pg_ctl', package: 'postgresql', usedBy: 'the PostgreSQL store and cluster tests only (initdb, pg_ctl)', optional: true }
])

/** Where Debian installs PostgreSQL's server binaries, newest version first. */
export function postgresBinDirs (root = '/usr/lib/postgresql') {
  let versions
  try {
    versions = readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))
  } catch {
    return []
  }
  return versions.map((v) => join(root, v, 'bin'))
}

/** Whether `command` is an executable file in one of the directories of `path` (a PATH value). */
export function onPath (command, path) {
  for (const dir of (path ?? '').split(delimiter)) {
    if (dir === '') continue
    const file = join(dir, command)
    try {
      if (!statSync(file).isFile()) continue
      accessSync(file, constants.X_OK)
      return true
    } catch {
      // not here
    }
  }
  return false
}

/**
 * The prerequisites of `list` missing from `path`, and from `extraDirs` (default: Debian's
 * PostgreSQL binary directories) for the optional ones.
 */
export function missingPrerequisites (path, list = PREREQUISITES, extraDirs = postgresBinDirs()) {
  return list.filter((p) => !onPath(p.command, p.optional === true ? [path ?? '', ...extraDirs].join(delimiter) : path))
}

/** The one line that says what to install, or null if nothing is missing. */
export function prerequisitesMessage (missing) {
  if (missing.length === 0) return null
  const packages = [...new Set(missing.map((p) => p.package))]
  const what = missing.map((p) => `${p.command} for ${p.usedBy}`).join('; ')
  return `herald tests: missing system package${packages.length > 1 ? 's' : ''}: ${packages.join(', ')} (apt-get install ${packages.join(' ')}): ${what}`
}

/** Writes the line and exits 1 if something is missing (vitest's globalSetup, and the CLI below). */
export default function checkPrerequisites () {
  const missing = missingPrerequisites(process.env.PATH)
  const optional = prerequisitesMessage(missing.filter((p) => p.optional === true))
  if (optional !== null) process.stderr.write(`${optional} (those tests will fail; the others run)\n`)
  const message = prerequisitesMessage(missing.filter((p) => p.optional !== true))
  if (message === null) return
  process.stderr.write(`${message}\n`)
  process.exit(1)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === '--missing-packages') {
    // for .ci/run: the packages to install, space-separated (empty line if none)
    process.stdout.write(`${[...new Set(missingPrerequisites(process.env.PATH).map((p) => p.package))].join(' ')}\n`)
  } else {
    checkPrerequisites()
  }
}

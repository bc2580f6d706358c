/**
 * The prerequisites check (test/support/prerequisites.mjs): without a system package the tests
 * need, `npm test` and vitest stop at once with one line naming the package to install.
 */
import { spawn } from 'node:child_process'
import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { tempDir } from '@herald/node-runtime/testing'
import { PREREQUISITES, missingPrerequisites, postgresBinDirs, prerequisitesMessage } from './support/prerequisites.mjs'

const ROOT = join(import.meta.dirname, '..')

function run (args: string[], path: string): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, PATH: path }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.once('close', (code) => { resolve({ code, stdout, stderr }) })
  })
}

describe('system prerequisites of the tests', () => {
  let dir: { path: string, remove: () => Promise<void> } | null = null
  afterEach(async () => {
    await dir?.remove()
    dir = null
  })

  /** A PATH directory holding executables named `commands` (and, for `plain`, a non-executable file). */
  async function pathWith (commands: string[], plain: string[] = []): Promise<string> {
    const d = await tempDir('herald-prereq-')
    dir = d
    const bin = join(d.path, 'bin')
    await mkdir(bin)
    for (const c of [...commands, ...plain]) await writeFile(join(bin, c), '#!/bin/sh\n')
    for (const c of commands) await chmod(join(bin, c), 0o755)
    return bin
  }

  const all = PREREQUISITES.map((p) => p.command)
  const [first, ...others] = PREREQUISITES

  it('finds what is on PATH as an executable, and only that', async () => {
    // every prerequisite but the first as an executable; the first as a plain, non-executable file
    const bin = await pathWith(others.map((p) => p.command), [first!.command])
    expect(missingPrerequisites(bin).map((p) => p.command)).toEqual([first!.command])
    expect(missingPrerequisites(`/nonexistent:${bin}`).map((p) => p.command)).toEqual([first!.command])
    expect(missingPrerequisites('', PREREQUISITES, []).map((p) => p.command)).toEqual(all)
    expect(prerequisitesMessage([])).toBeNull()
  })

  it('looks for the optional PostgreSQL binaries in Debian\'s version directories too, and only for them', async () => {
    const root = await tempDir('herald-prereq-pg-')
    try {
      const bin = join(root.path, '15', 'bin')
      await mkdir(bin, { recursive: true })
      await mkdir(join(root.path, '9', 'bin'), { recursive: true })
      await writeFile(join(bin, 'pg_ctl'), '#!/bin/sh\n')
      await chmod(join(bin, 'pg_ctl'), 0o755)
      expect(postgresBinDirs(root.path)).toEqual([bin, join(root.path, '9', 'bin')])
      expect(postgresBinDirs(join(root.path, 'none'))).toEqual([])
      const pgEntry = PREREQUISITES.find((p) => p.package === 'postgresql')
      expect(pgEntry?.optional).toBe(true)
      expect(missingPrerequisites('', [pgEntry!], [bin])).toEqual([])
      expect(missingPrerequisites('', [pgEntry!], [])).toEqual([pgEntry])
      // a required one is not looked for there
      expect(missingPrerequisites('', [{ ...pgEntry!, optional: false }], [bin])).toHaveLength(1)
    } finally {
      await root.remove()
    }
  })

  it('run by node, without socat: exit 1 and one line naming the package', async () => {
    const bin = await pathWith(all.filter((c) => c !== 'socat'))
    const r = await run([join(ROOT, 'test', 'support', 'prerequisites.mjs')], bin)
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toBe('herald tests: missing system package: socat (apt-get install socat): socat for the serial-line tests (pty pairs)\n')
  })

  it('run by node, with everything there: exit 0, silent', async () => {
    const bin = await pathWith(all)
    expect(await run([join(ROOT, 'test', 'support', 'prerequisites.mjs')], bin)).toEqual({ code: 0, stdout: '', stderr: '' })
  })

  it('--missing-packages prints the packages to install, for .ci/run', async () => {
    const bin = await pathWith(['socat'])
    const expected = [...new Set(missingPrerequisites(bin).map((p) => p.package))].join(' ')
    expect(expected).toContain('openssl')
    expect(await run([join(ROOT, 'test', 'support', 'prerequisites.mjs'), '--missing-packages'], bin)).toEqual({ code: 0, stdout: `${expected}\n`, stderr: '' })
  })

  it('vitest (its globalSetup) stops before any test runs, with the same line', async () => {
    const bin = await pathWith([])
    const r = await run([join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', 'protocol/src/duration.test.ts'], bin)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${prerequisitesMessage(PREREQUISITES.filter((p) => p.optional !== true))!}\n`)
    expect(r.stderr).toContain('herald tests: missing system packages: socat, openssl')
    expect(r.stdout).not.toContain('duration.test.ts')
  })
})

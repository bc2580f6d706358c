/**
 * The simulated fleet's non-volatile memory in a file (`startSim({ stateFile })`, `herald sim
 * --state`): per serial, the boot counter, the last position made and the outbox
 * ([DEV-SEQ-1], [DEV-SEQ-2]). Run the sim again on the same file and each device boots as its next
 * boot, with the reports it had not had acknowledged, as real devices would after a power cycle.
 * Written atomically (a temporary file, then rename) every second and at close.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import type { DeviceNvState } from './device.js'
import { SimConfigError } from './errors.js'

export const NV_STATE_FORMAT = 'herald-sim-state'
export const NV_STATE_VERSION = 1
/** Largest state file read, in bytes. */
export const MAX_NV_STATE_BYTES = 256 * 1024 * 1024

/** Reads a state file; an absent file is an empty state. Throws SimConfigError naming what is wrong. */
export function readNvStateFile (path: string): Map<string, DeviceNvState> {
  const states = new Map<string, DeviceNvState>()
  if (!existsSync(path)) return states
  const text = readFileSync(path, 'utf8')
  if (text.length > MAX_NV_STATE_BYTES) throw new SimConfigError(`state file ${path}: larger than ${MAX_NV_STATE_BYTES} bytes`)
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw new SimConfigError(`state file ${path}: not JSON (${(err as Error).message})`)
  }
  const d = doc as { format?: unknown, version?: unknown, devices?: unknown }
  if (d === null || typeof d !== 'object' || d.format !== NV_STATE_FORMAT || d.version !== NV_STATE_VERSION || typeof d.devices !== 'object' || d.devices === null) {
    throw new SimConfigError(`state file ${path}: not a ${NV_STATE_FORMAT} file of version ${NV_STATE_VERSION}`)
  }
  for (const [serial, nv] of Object.entries(d.devices as Record<string, unknown>)) {
    const n = nv as { boot?: unknown, lastMade?: unknown, outbox?: unknown } | null
    const entryOk = (e: unknown): boolean => {
      const x = e as { boot?: unknown, seq?: unknown, frame?: unknown } | null
      return x !== null && typeof x === 'object' && typeof x.boot === 'number' && typeof x.seq === 'number' && typeof x.frame === 'string'
    }
    if (n === null || typeof n !== 'object' || typeof n.boot !== 'number' || typeof n.lastMade !== 'string' || !Array.isArray(n.outbox) || !n.outbox.every(entryOk)) {
      throw new SimConfigError(`state file ${path}: device ${serial}: needs boot, lastMade and outbox [{ boot, seq, frame }]`)
    }
    states.set(serial, n as DeviceNvState)
  }
  return states
}

/** Writes a state file atomically. */
export function writeNvStateFile (path: string, states: ReadonlyMap<string, DeviceNvState>): void {
  const doc = { format: NV_STATE_FORMAT, version: NV_STATE_VERSION, devices: Object.fromEntries(states) }
  writeFileSync(`${path}.tmp`, JSON.stringify(doc))
  renameSync(`${path}.tmp`, path)
}

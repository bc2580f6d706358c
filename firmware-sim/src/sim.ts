/**
 * `startSim()`: a fleet of simulated devices (and recordings played back) on TCP ports, ttys or
 * in-memory links, with faults, recording and an emitted-reports log.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { realClock, type SimClock } from './clock.js'
import { DEVICE_DEFAULTS, MAX_RATE, SimDevice, serialFor, type DeviceCounters, type DeviceNvState, type EmittedReport } from './device.js'
import { SimConfigError } from './errors.js'
import { validateFaults, type FaultCounters, type FaultOptions } from './faults.js'
import type { DeviceLink } from './links/link.js'
import { MemoryLink, type MemoryGatewayEnd } from './links/memory-link.js'
import { SerialLink } from './links/serial-link.js'
import { TcpLink } from './links/tcp-link.js'
import { findModel, MODELS } from './models/index.js'
import { readRecording, RecordingWriter, RECORDING_FORMAT, RECORDING_VERSION, type Recording } from './recording.js'
import { readNvStateFile, writeNvStateFile } from './nv-state-file.js'
import { ReplayDevice } from './replay-device.js'

/** `count` devices of `model`, optionally with their own faults (instead of the run's). */
export interface DeviceGroup {
  readonly model: string
  readonly count: number
  readonly faults?: FaultOptions | undefined
}

/** How the devices are reached. */
export type LinkOptions =
  /** One listening port per device: basePort, basePort + 1, ...; basePort 0: each on a free port. Host default 127.0.0.1. */
  | { readonly kind: 'tcp', readonly host?: string | undefined, readonly basePort: number }
  /** One tty per device, in order. Baud rate default 115200. */
  | { readonly kind: 'serial', readonly paths: readonly string[], readonly baudRate?: number | undefined }
  /** In-memory lines; each device's gateway end is in {@link SimDeviceInfo.memory}. */
  | { readonly kind: 'memory' }

export interface SimOptions {
  readonly devices: readonly DeviceGroup[]
  readonly link: LinkOptions
  /** Periodic STATE reports per second per device. Default 1. */
  readonly rate?: number | undefined
  /** The run seed: same seed, same devices, same reports, same faults. Default 1. */
  readonly seed?: number | undefined
  /** Faults of every device (a group's own faults replace them). Default none. */
  readonly faults?: FaultOptions | undefined
  /** Record every device's bytes into `<record>/<serial>.jsonl` (the directory is created). */
  readonly record?: string | undefined
  /** Recordings to play back, each as one more device (after the simulated ones). */
  readonly replay?: readonly string[] | undefined
  /** When a replay starts: when its line opens (default) or at once. */
  readonly replayStartOn?: 'open' | 'start' | undefined
  /** Append every report to this file as JSON Lines (written before the report's first byte is). */
  readonly emittedLog?: string | undefined
  /** Called for every report. */
  readonly onEmitted?: ((report: EmittedReport) => void) | undefined
  /** Default 4096 per device. */
  readonly outboxCapacity?: number | undefined
  /** Default 32. */
  readonly window?: number | undefined
  /** Default 500 ms. */
  readonly retransmitMs?: number | undefined
  /** Default: the real clock. */
  readonly clock?: SimClock | undefined
  /**
   * Keep the devices' non-volatile memory (boot counter, last position, outbox) in this file, so a
   * run on the same file continues each device as its next boot (see nv-state-file.ts).
   */
  readonly stateFile?: string | undefined
}

/** How often the state file is written while the sim runs. */
const STATE_SAVE_MS = 1000

/** Devices (simulated and replayed) a run has at most. */
export const MAX_DEVICES = 10_000

/** One device of a run. */
export interface SimDeviceInfo {
  readonly kind: 'sim' | 'replay'
  readonly model: string
  readonly serial: string
  readonly fw: string
  /** Where a gateway reaches it: `tcp://127.0.0.1:7000`, `serial:///dev/pts/5?baud=115200`, `memory://<serial>`. */
  readonly url: string
  /** The simulated device (kind `sim`), to read its counters or change its faults. */
  readonly device: SimDevice | null
  /** The replay (kind `replay`). */
  readonly replay: ReplayDevice | null
  /** The gateway's end of the line, with `link.kind` `memory`. */
  readonly memory: MemoryGatewayEnd | null
}

/** A run's totals. */
export interface SimSummary {
  readonly devices: number
  /** Lines open now (TCP: a gateway connected). */
  readonly linksOpen: number
  readonly uptimeMs: number
  readonly reportsMade: number
  readonly framesSent: number
  readonly retransmitted: number
  readonly acked: number
  readonly outbox: number
  readonly droppedFull: number
  readonly acksReceived: number
  readonly syncsReceived: number
  readonly faultsInjected: number
  readonly faults: FaultCounters
  /** Bytes the links dropped (line closed, or the gateway not reading). */
  readonly bytesDropped: number
  /** Replays: writes played of all. */
  readonly replayed: { readonly played: number, readonly total: number }
  /** True if a recording file reached its size limit. */
  readonly recordingFull: boolean
}

export interface SimHandle {
  readonly devices: readonly SimDeviceInfo[]
  /** Every simulated device's counters, in order. */
  counters (): DeviceCounters[]
  summary (): SimSummary
  /** Replaces the faults of the devices with these serials (all simulated devices if omitted). */
  setFaults (faults: FaultOptions, serials?: readonly string[]): void
  /** Stops (false) or resumes (true) making reports, on these serials (all if omitted); see SimDevice.setReporting. */
  setReporting (on: boolean, serials?: readonly string[]): void
  /** Stops every device, closes links and files. */
  close (): Promise<void>
}

function checkOptions (o: SimOptions): void {
  if (!Array.isArray(o.devices)) throw new SimConfigError('devices: an array of { model, count }')
  const groups: readonly DeviceGroup[] = o.devices
  groups.forEach((g, i) => {
    if (findModel(g.model) === undefined) throw new SimConfigError(`devices[${i}].model: unknown model "${g.model}" (models: ${Object.keys(MODELS).join(', ')})`)
    if (!(Number.isInteger(g.count) && g.count >= 1)) throw new SimConfigError(`devices[${i}].count: a whole number from 1, not ${g.count}`)
    if (g.faults !== undefined) validateFaults(g.faults, `devices[${i}].faults`)
  })
  const total = groups.reduce((n, g) => n + g.count, 0) + (o.replay?.length ?? 0)
  if (total === 0) throw new SimConfigError('devices: no device to simulate')
  if (total > MAX_DEVICES) throw new SimConfigError(`devices: ${total} devices, more than ${MAX_DEVICES}`)
  if (o.faults !== undefined) validateFaults(o.faults, 'faults')
  const rate = o.rate ?? DEVICE_DEFAULTS.rate
  if (!(rate >= 0 && rate <= MAX_RATE)) throw new SimConfigError(`rate: reports per second from 0 to ${MAX_RATE}, not ${rate}`)
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) throw new SimConfigError(`seed: a whole number, not ${o.seed}`)
  const link = o.link
  if (link.kind === 'tcp') {
    if (!(Number.isInteger(link.basePort) && link.basePort >= 0 && link.basePort <= 65535)) throw new SimConfigError(`link.basePort: a port from 0 to 65535, not ${link.basePort}`)
    if (link.basePort !== 0 && link.basePort + total - 1 > 65535) throw new SimConfigError(`link.basePort: ${total} devices from port ${link.basePort} go beyond 65535`)
  } else if (link.kind === 'serial') {
    if (link.paths.length !== total) throw new SimConfigError(`link.paths: ${total} devices need ${total} serial paths, not ${link.paths.length}`)
    if (new Set(link.paths).size !== link.paths.length) throw new SimConfigError('link.paths: a serial path is given twice')
    if (link.baudRate !== undefined && !(Number.isInteger(link.baudRate) && link.baudRate > 0)) throw new SimConfigError(`link.baudRate: a whole number, not ${link.baudRate}`)
  } else if (link.kind !== 'memory') {
    throw new SimConfigError(`link.kind: tcp, serial or memory, not ${String((link as { kind: unknown }).kind)}`)
  }
}

function makeLink (link: LinkOptions, i: number, name: string): DeviceLink {
  switch (link.kind) {
    case 'tcp': return new TcpLink({ host: link.host, port: link.basePort === 0 ? 0 : link.basePort + i })
    case 'serial': return new SerialLink({ path: link.paths[i]!, baudRate: link.baudRate })
    case 'memory': return new MemoryLink(name)
  }
}

/** Starts a run: every device booted and its line listening (TCP) or open (serial, memory). */
export async function startSim (options: SimOptions): Promise<SimHandle> {
  checkOptions(options)
  const seed = options.seed ?? 1
  const clock = options.clock ?? realClock
  const startedAt = clock.now()
  const recordings: Recording[] = (options.replay ?? []).map((file) => readRecording(file))
  const writers: RecordingWriter[] = []
  let emittedFd: number | null = null
  const infos: SimDeviceInfo[] = []
  const simDevices: SimDevice[] = []
  const nvStates = options.stateFile === undefined ? new Map<string, DeviceNvState>() : readNvStateFile(options.stateFile)
  let saveTimer: NodeJS.Timeout | null = null
  const saveState = (): void => {
    if (options.stateFile === undefined) return
    for (const d of simDevices) nvStates.set(d.serial, d.nvState())
    writeNvStateFile(options.stateFile, nvStates)
  }

  const closeFiles = (): void => {
    for (const w of writers) w.close()
    if (emittedFd !== null) closeSync(emittedFd)
    emittedFd = null
  }
  const closeAll = async (): Promise<void> => {
    if (saveTimer !== null) clearInterval(saveTimer)
    await Promise.allSettled(infos.map(async (d) => { await (d.device ?? d.replay)?.close() }))
    if (simDevices.length > 0) saveState()
    closeFiles()
  }

  try {
    if (options.record !== undefined) mkdirSync(options.record, { recursive: true })
    if (options.emittedLog !== undefined) emittedFd = openSync(options.emittedLog, 'a')
    const onEmitted = (report: EmittedReport): void => {
      if (emittedFd !== null) writeSync(emittedFd, JSON.stringify(report) + '\n')
      options.onEmitted?.(report)
    }
    let i = 0
    for (const group of options.devices) {
      const model = findModel(group.model)!
      for (let k = 0; k < group.count; k++, i++) {
        let writer: RecordingWriter | null = null
        const serial = serialFor(model, seed, k)
        const device: SimDevice = new SimDevice({
          model,
          seed,
          modelIndex: k,
          nvState: nvStates.get(serial),
          link: makeLink(options.link, i, `${model.name}-${k}`),
          clock,
          rate: options.rate,
          outboxCapacity: options.outboxCapacity,
          window: options.window,
          retransmitMs: options.retransmitMs,
          faults: group.faults ?? options.faults,
          onEmitted,
          onWrite: options.record === undefined ? undefined : (t, bytes) => { writer?.write(t, bytes) }
        })
        if (options.record !== undefined) {
          writer = new RecordingWriter(join(options.record, `${device.serial}.jsonl`), {
            format: RECORDING_FORMAT, version: RECORDING_VERSION, model: model.name, serial: device.serial, fw: device.fw, seed, started: new Date().toISOString()
          })
          writers.push(writer)
        }
        simDevices.push(device)
        infos.push({ kind: 'sim', model: model.name, serial: device.serial, fw: device.fw, url: '', device, replay: null, memory: null })
      }
    }
    for (const recording of recordings) {
      const replay = new ReplayDevice({ recording, link: makeLink(options.link, i, recording.header.serial), clock, startOn: options.replayStartOn })
      infos.push({ kind: 'replay', model: replay.model, serial: replay.serial, fw: replay.fw, url: '', device: null, replay, memory: null })
      i++
    }
    for (let n = 0; n < infos.length; n++) {
      const info = infos[n]!
      const node = info.device ?? info.replay!
      await node.start()
      const link = node.link
      infos[n] = { ...info, url: link.url, memory: link instanceof MemoryLink ? link.gateway : null }
    }
    if (options.stateFile !== undefined) {
      saveState()
      saveTimer = setInterval(saveState, STATE_SAVE_MS)
      saveTimer.unref()
    }
  } catch (err) {
    await closeAll()
    throw err
  }

  const bySerial = new Map(simDevices.map((d) => [d.serial, d]))
  let closed = false
  return {
    devices: infos,
    counters: () => simDevices.map((d) => d.counters),
    summary: () => summarize(infos, clock.now() - startedAt, writers.some((w) => w.full)),
    setFaults (faults, serials) {
      validateFaults(faults)
      const targets = serials === undefined ? simDevices : serials.map((s) => {
        const d = bySerial.get(s)
        if (d === undefined) throw new SimConfigError(`serials: no simulated device "${s}"`)
        return d
      })
      for (const d of targets) d.setFaults(faults)
    },
    setReporting (on, serials) {
      for (const d of simDevices) if (serials === undefined || serials.includes(d.serial)) d.setReporting(on)
    },
    async close () {
      if (closed) return
      closed = true
      await closeAll()
    }
  }
}

function summarize (infos: readonly SimDeviceInfo[], uptimeMs: number, recordingFull: boolean): SimSummary {
  const faults = { garbage: 0, truncated: 0, badCrc: 0, reboots: 0, silences: 0, bursts: 0, unplugs: 0 }
  const s = {
    devices: infos.length, linksOpen: 0, uptimeMs, reportsMade: 0, framesSent: 0, retransmitted: 0, acked: 0, outbox: 0,
    droppedFull: 0, acksReceived: 0, syncsReceived: 0, faultsInjected: 0, bytesDropped: 0, played: 0, total: 0
  }
  for (const info of infos) {
    const link = (info.device ?? info.replay)!.link
    if (link.isOpen) s.linksOpen++
    s.bytesDropped += link.stats.bytesDropped
    if (info.device !== null) {
      const c = info.device.counters
      s.reportsMade += c.reportsMade
      s.framesSent += c.framesSent
      s.retransmitted += c.retransmitted
      s.acked += c.acked
      s.outbox += c.outbox
      s.droppedFull += c.droppedFull
      s.acksReceived += c.acksReceived
      s.syncsReceived += c.syncsReceived
      s.faultsInjected += c.faultsInjected
      for (const k of Object.keys(faults) as Array<keyof FaultCounters>) faults[k] += c.faults[k]
    } else if (info.replay !== null) {
      const c = info.replay.counters
      s.played += c.writesPlayed
      s.total += c.writesTotal
    }
  }
  const { played, total, ...rest } = s
  return { ...rest, faults, replayed: { played, total }, recordingFull }
}

function hms (ms: number): string {
  const t = Math.floor(ms / 1000)
  const pad = (n: number): string => String(n).padStart(2, '0')
  return `${pad(Math.floor(t / 3600))}:${pad(Math.floor(t / 60) % 60)}:${pad(t % 60)}`
}

/** A summary as one line, for the CLI. */
export function formatSummary (s: SimSummary): string {
  const parts = [
    `${hms(s.uptimeMs)}`,
    `${s.devices} devices, ${s.linksOpen} connected`,
    `reports ${s.reportsMade}`,
    `sent ${s.framesSent}`,
    `resent ${s.retransmitted}`,
    `acked ${s.acked}`,
    `outbox ${s.outbox}`,
    `full ${s.droppedFull}`,
    `faults ${s.faultsInjected}`
  ]
  if (s.replayed.total > 0) parts.push(`replayed ${s.replayed.played}/${s.replayed.total}`)
  if (s.recordingFull) parts.push('RECORDING FULL')
  return parts.join(' | ')
}

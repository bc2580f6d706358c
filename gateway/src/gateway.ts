/**
 * The gateway: device lines in, events out. It turns each device report into the events the
 * mapping says, raises them through a ServiceEndpoint with two-level persistence, and acknowledges
 * the report to the device only once those events and the device's mark are durable together
 * ([DEV-ACK-1], [SVC-MARK-1]). A device resends what was not acknowledged; the mark tells a resent
 * report from a new one ([DEV-GW-1]). So every report the mapping turns into events is raised
 * exactly once, through line faults, device reboots and gateway restarts.
 */
import { rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { formatPos, parsePos, type DataFrame, type FramePos, type HelloFrame } from '@herald/device-protocol'
import { TypedEmitter, silentLogger, systemClock, toHeraldError, type Clock, type HeraldError, type Logger } from '@herald/protocol'
import { PRIVATE_FILE_MODE, ensurePrivateDir } from '@herald/node-runtime'
import { ServiceEndpoint, createTwoLevelServicePersistence, type RaiseItem, type ServicePersistence, type ServiceStatus } from '@herald/service-endpoint'
import type { GatewayConfig } from './config/gateway-config.js'
import { DevicePort, PortState } from './device-port.js'
import type { PortHost } from './device-port.js'
import { DeviceTracker } from './device-tracker.js'
import { mapFrame } from './mapping.js'
import type { DeviceIdentity, MappedRaise } from './mapping.js'

/** Limits of the commit pipeline. */
export const GATEWAY_PIPELINE = {
  /** Most data frames in one raiseBatch. */
  framesPerBatch: 256,
  /** Most events in one raiseBatch. */
  eventsPerBatch: 2000,
  /**
   * Most accepted frames waiting per device, to be committed or (while not durable) for the broker
   * ([GW-ACK-2]); beyond, frames are dropped and resent by the device.
   */
  pendingPerDevice: 4096,
  /** Most distinct device serials the gateway tracks. */
  devicesTracked: 10_000,
  /** Longest serial accepted (the mark key `device:<serial>` must fit MARK_LIMITS.keyChars). */
  serialChars: 64
} as const

/** The mark key of a device in service persistence. */
export function markKey (serial: string): string {
  return `device:${serial}`
}

/** Counters of one device (by serial), since the gateway started. */
export interface DeviceCounters {
  /** Data frames handled: their events (if any) are durable. */
  handled: number
  /** Events raised from them. */
  raised: number
  /** Frames received again after being handled (re-acknowledged). */
  duplicates: number
  /** Frames dropped because one before them was missing. */
  outOfOrder: number
  /** Frames the device lost before they reached the gateway ([DEV-GW-2]). */
  gaps: number
  /** Mapping rules that matched but could not build a payload. */
  unmapped: number
  /** Commits of this device's frames that failed (the device resends). */
  commitFailures: number
}

/** One device line in the status. */
export interface DeviceLineStatus {
  readonly name: string
  readonly url: string
  readonly state: PortState
  /** The device on the line, once it said HELLO. */
  readonly serial: string | null
  readonly model: string | null
  readonly fw: string | null
  /** The last report handled, `<boot>:<seq>`: durable while `durable`, else held in memory. */
  readonly mark: string | null
  /** The last report acknowledged to the device ([GW-ACK-2]: behind `mark` while the broker has not acknowledged its events). */
  readonly acknowledged: string | null
  /** Reports handled whose ACK waits for the broker's acknowledgement of their events ([GW-ACK-2]). */
  readonly awaitingBroker: number
  readonly lastRxAt: number | null
  readonly lastError: string | null
  readonly opens: number
  readonly frames: number
  /** Frames the decoder rejected: truncated, oversized, bad CRC, malformed. */
  readonly corrupt: number
  readonly noiseBytes: number
  readonly counters: DeviceCounters | null
}

/** What an operator reads: `status()`, the `status` event, `status.json`, and the periodic log line. */
export interface GatewayStatus {
  readonly at: number
  readonly serviceId: string
  readonly service: ServiceStatus
  /** Whether handled reports are durable at the gateway (false after its SQLite level failed: `service.durable`). */
  readonly durable: boolean
  /**
   * When a device's report is acknowledged ([GW-ACK-2]): 'on-commit' once its events and mark are
   * durable at the gateway; 'after-broker-ack' once the broker has acknowledged its events, while
   * the gateway is not durable.
   */
  readonly acks: 'on-commit' | 'after-broker-ack'
  readonly devicesOnline: number
  readonly devices: readonly DeviceLineStatus[]
  /** Frames decoded per second over the last status interval. */
  readonly framesPerSecond: number
  readonly totals: {
    readonly frames: number
    readonly corrupt: number
    readonly handled: number
    readonly raised: number
    readonly duplicates: number
    readonly outOfOrder: number
    readonly gaps: number
    readonly unmapped: number
  }
}

export interface GatewayEvents {
  /** Every status interval. */
  status: (status: GatewayStatus) => void
  /** Data frames of a device became durable (for tests and displays). */
  handled: (info: { serial: string, upTo: FramePos, frames: number, raised: number }) => void
  /**
   * A background failure that does not stop the gateway (refused credentials, a failed commit).
   * Emitted only when listened to; without a listener it is logged at error level, never thrown.
   */
  error: (error: HeraldError) => void
}

interface PendingFrame {
  readonly pos: FramePos
  readonly raises: readonly MappedRaise[]
}

/** Frames handled while not durable, whose ACK waits until the broker has acknowledged `seq` ([GW-ACK-2]). */
interface AwaitingAck {
  readonly upTo: FramePos
  readonly frames: number
  readonly seq: number
  ready: boolean
}

/** One device, by serial: what was handled, what waits to be committed, and its line. */
interface DeviceRecord {
  readonly serial: string
  identity: DeviceIdentity
  readonly tracker: DeviceTracker
  port: DevicePort | null
  pending: PendingFrame[]
  inflight: boolean
  /** What the device was told it may delete (its last ACK): the mark, or behind it while `awaiting`. */
  told: FramePos | null
  /** The highest seq raised from this device's frames in this run (0 for none). */
  lastSeq: number
  /** Handled frames waiting for the broker before their ACK, oldest first ([GW-ACK-2]). */
  awaiting: AwaitingAck[]
  /** Frames in `awaiting`. */
  awaitingFrames: number
  readonly counters: DeviceCounters
}

export interface GatewayOptions {
  readonly logger?: Logger
  readonly clock?: Clock
  /** Service persistence; default: two-level, `gateway.db` in the data directory. */
  readonly persistence?: ServicePersistence
}

export class Gateway extends TypedEmitter<GatewayEvents> {
  readonly config: GatewayConfig
  readonly endpoint: ServiceEndpoint
  readonly #logger: Logger
  readonly #clock: Clock
  readonly #ports: DevicePort[]
  readonly #records = new Map<string, DeviceRecord>()
  /** The serial last seen on each line, so the status still names it after the line closed. */
  readonly #lastSerial = new Map<DevicePort, string>()
  #statusTimer: NodeJS.Timeout | null = null
  #framesAtLastStatus = 0
  #lastStatusAt: number
  #closed = false

  /** Use {@link startGateway}. */
  constructor (config: GatewayConfig, persistence: ServicePersistence, options: GatewayOptions = {}) {
    super()
    this.config = config
    this.#logger = options.logger ?? silentLogger
    this.#clock = options.clock ?? systemClock
    this.#lastStatusAt = this.#clock.now()
    this.endpoint = new ServiceEndpoint({
      url: config.brokerUrl,
      ...(config.brokerTls !== null ? { tls: config.brokerTls } : {}),
      serviceId: config.serviceId,
      secret: config.secret,
      events: config.events,
      persistence,
      logger: this.#logger,
      clock: this.#clock
    })
    // [CONN-AUTH-2] refused credentials among them: to the gateway's listeners, else logged at error level
    this.endpoint.on('error', (err) => {
      if (this.listenerCount('error') > 0) this.emit('error', err)
      else this.#logger.error({ code: err.code, err }, err.message)
    })
    this.endpoint.on('rejected', ({ name, error }) => { this.#logger.warn({ event: name, code: error.code, err: error.message }, 'the broker refused an event') })
    this.endpoint.on('dropped', ({ events, total }) => { this.#logger.warn({ dropped: events.length, total }, 'persistence full: oldest events dropped') })
    this.endpoint.on('persistenceFailed', ({ error, lost }) => { this.#logger.error({ err: error.message, lost }, 'level-2 persistence failed; events held in memory only') })
    for (const [key, value] of this.endpoint.marks()) {
      if (!key.startsWith('device:')) continue
      const serial = key.slice('device:'.length)
      let mark: FramePos | null
      try {
        mark = parsePos(value)
      } catch {
        this.#logger.error({ serial, mark: value }, 'unreadable device mark in persistence; ignored')
        continue
      }
      this.#records.set(serial, this.#newRecord(serial, mark, { name: '', serial, model: '', fw: '' }))
    }
    const host: PortHost = {
      hello: (port, frame) => { this.#onHello(port, frame) },
      data: (port, frame) => { this.#onData(port, frame) },
      lineClosed: (port) => { this.#onLineClosed(port) }
    }
    this.#ports = config.devices.map((d) => new DevicePort(d, host, config.lines, { logger: this.#logger, clock: this.#clock }))
  }

  /** Connects to the broker and opens every device line. */
  start (): this {
    this.endpoint.start()
    for (const p of this.#ports) p.start()
    this.#statusTimer = setInterval(() => { void this.#reportStatus() }, this.config.statusIntervalMs)
    this.#statusTimer.unref()
    return this
  }

  /** True once close() was called. */
  get closed (): boolean {
    return this.#closed
  }

  /** The status now. */
  status (): GatewayStatus {
    const now = this.#clock.now()
    const devices = this.#ports.map((p): DeviceLineStatus => {
      const serial = p.serial ?? this.#lastSerial.get(p)
      const rec = serial === undefined ? undefined : this.#records.get(serial)
      const d = p.decoderStats()
      return {
        name: p.config.name,
        url: p.config.url,
        state: p.state,
        serial: serial ?? null,
        model: rec?.identity.model ?? null,
        fw: rec?.identity.fw ?? null,
        mark: rec?.tracker.durable == null ? null : formatPos(rec.tracker.durable),
        acknowledged: rec?.told == null ? null : formatPos(rec.told),
        awaitingBroker: rec?.awaitingFrames ?? 0,
        lastRxAt: p.lastRxAt,
        lastError: p.lastError,
        opens: p.counters.opens,
        frames: p.counters.frames,
        corrupt: p.counters.corrupt,
        noiseBytes: d.noiseBytes,
        counters: rec === undefined ? null : { ...rec.counters }
      }
    })
    const sum = (f: (c: DeviceCounters) => number): number => [...this.#records.values()].reduce((n, r) => n + f(r.counters), 0)
    const frames = this.#ports.reduce((n, p) => n + p.counters.frames, 0)
    const seconds = Math.max(0.001, (now - this.#lastStatusAt) / 1000)
    const service = this.endpoint.status
    return {
      at: now,
      serviceId: this.config.serviceId,
      service,
      durable: service.durable,
      acks: service.durable ? 'on-commit' : 'after-broker-ack',
      devicesOnline: devices.filter((d) => d.state === PortState.online).length,
      devices,
      framesPerSecond: Math.round((frames - this.#framesAtLastStatus) / seconds * 10) / 10,
      totals: {
        frames,
        corrupt: this.#ports.reduce((n, p) => n + p.counters.corrupt, 0),
        handled: sum((c) => c.handled),
        raised: sum((c) => c.raised),
        duplicates: sum((c) => c.duplicates),
        outOfOrder: sum((c) => c.outOfOrder),
        gaps: sum((c) => c.gaps),
        unmapped: sum((c) => c.unmapped)
      }
    }
  }

  /** Closes the lines, waits for commits in flight, closes the endpoint and persistence. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#statusTimer !== null) clearInterval(this.#statusTimer)
    for (const p of this.#ports) p.close()
    await this.#waitForCommits()
    await this.#writeStatusFile(this.status()).catch(() => {})
    await this.endpoint.close()
    await this.endpoint.persistence.close()
  }

  #newRecord (serial: string, mark: FramePos | null, identity: DeviceIdentity): DeviceRecord {
    return {
      serial,
      identity,
      tracker: new DeviceTracker(mark),
      port: null,
      pending: [],
      inflight: false,
      told: mark,
      lastSeq: 0,
      awaiting: [],
      awaitingFrames: 0,
      counters: { handled: 0, raised: 0, duplicates: 0, outOfOrder: 0, gaps: 0, unmapped: 0, commitFailures: 0 }
    }
  }

  #onHello (port: DevicePort, frame: HelloFrame): void {
    const log = { device: port.config.name, serial: frame.serial, model: frame.model, fw: frame.fw, boot: frame.boot, oldest: formatPos(frame.oldest) }
    if (port.config.model !== null && port.config.model !== frame.model) {
      this.#logger.error(log, `device refused: model ${frame.model}, the configuration expects ${port.config.model}`)
      this.#detach(port)
      port.refuse(`model ${frame.model}, expected ${port.config.model}`)
      return
    }
    if ([...frame.serial].length > GATEWAY_PIPELINE.serialChars) {
      this.#logger.error(log, `device refused: a serial has at most ${GATEWAY_PIPELINE.serialChars} characters`)
      this.#detach(port)
      port.refuse('serial too long')
      return
    }
    let rec = this.#records.get(frame.serial)
    if (rec?.port != null && rec.port !== port && rec.port.state !== PortState.closed && rec.port.state !== PortState.connecting) {
      // [DEV-GW-4] the same serial on two lines: the first keeps it
      this.#logger.error({ ...log, other: rec.port.config.name }, 'device refused: the same serial is online on another line')
      this.#detach(port)
      port.refuse(`serial ${frame.serial} is online on ${rec.port.config.name}`)
      return
    }
    if (port.serial !== null && port.serial !== frame.serial) this.#detach(port)
    if (rec === undefined) {
      if (this.#records.size >= GATEWAY_PIPELINE.devicesTracked) {
        this.#logger.error(log, `device refused: more than ${GATEWAY_PIPELINE.devicesTracked} devices tracked`)
        port.refuse('too many devices')
        return
      }
      rec = this.#newRecord(frame.serial, null, { name: port.config.name, serial: frame.serial, model: frame.model, fw: frame.fw })
      this.#records.set(frame.serial, rec)
    }
    rec.identity = { name: port.config.name, serial: frame.serial, model: frame.model, fw: frame.fw }
    rec.port = port
    const { reset } = rec.tracker.hello(frame.boot, frame.oldest)
    if (reset) this.#logger.warn(log, 'device boot counter went back: its mark is set aside ([DEV-GW-3])')
    if (port.state !== PortState.online || port.serial !== frame.serial) this.#logger.info({ ...log, mark: formatPos(rec.tracker.durable) }, 'device online')
    port.accept(frame.serial)
    this.#lastSerial.set(port, frame.serial)
    // [DEV-ACK-1] answer a HELLO with what is durable ([GW-ACK-2]: at the broker, while the gateway is not)
    if (rec.told !== null) port.ack(rec.told)
  }

  #onData (port: DevicePort, frame: DataFrame): void {
    const rec = port.serial === null ? undefined : this.#records.get(port.serial)
    if (rec === undefined || rec.port !== port) return
    const prevText = frame.seq === 1 ? frame.fields.prev : undefined
    let prev: FramePos | null | undefined
    try {
      prev = prevText === undefined ? undefined : parsePos(prevText)
    } catch {
      prev = undefined
    }
    const verdict = rec.tracker.judge(frame, prev)
    switch (verdict.kind) {
      case 'accept': {
        if (verdict.gap > 0) {
          rec.counters.gaps += verdict.gap
          this.#logger.warn({ serial: rec.serial, at: formatPos(frame), lost: verdict.gap }, 'device frames were lost before they reached the gateway')
        }
        const { raises, problems } = mapFrame(this.config.mapping, rec.identity, frame)
        if (problems.length > 0) {
          rec.counters.unmapped += problems.length
          this.#logger.warn({ serial: rec.serial, at: formatPos(frame), problems }, 'report only partly mapped')
        }
        if (rec.pending.length + rec.awaitingFrames >= GATEWAY_PIPELINE.pendingPerDevice) {
          // cannot keep it: forget everything not durable; the device resends after its HELLO
          this.#rollback(rec, 'too many frames waiting to be committed')
          return
        }
        rec.pending.push({ pos: { boot: frame.boot, seq: frame.seq }, raises })
        this.#pump(rec)
        return
      }
      case 'duplicate': {
        rec.counters.duplicates++
        // [GW-ACK-2] a resent frame still waiting for the broker is acknowledged when its events are
        if (rec.told !== null) port.ack(rec.told)
        return
      }
      case 'outOfOrder':
        rec.counters.outOfOrder++
        port.sync()
        return
      case 'needHello':
        port.sync()
    }
  }

  #onLineClosed (port: DevicePort): void {
    this.#detach(port)
  }

  /** The device on `port`, if any, is no longer reachable there. */
  #detach (port: DevicePort): void {
    if (port.serial === null) return
    const rec = this.#records.get(port.serial)
    if (rec?.port === port) {
      rec.port = null
      rec.tracker.lineClosed()
    }
  }

  /** Commits the pending frames of a device, one batch at a time, in order. */
  #pump (rec: DeviceRecord): void {
    if (rec.inflight || rec.pending.length === 0) return
    let n = 0
    let events = 0
    while (n < rec.pending.length && n < GATEWAY_PIPELINE.framesPerBatch) {
      const more = rec.pending[n]?.raises.length ?? 0
      if (n > 0 && events + more > GATEWAY_PIPELINE.eventsPerBatch) break
      events += more
      n++
    }
    const batch = rec.pending.splice(0, n)
    const upTo = batch[batch.length - 1]?.pos
    if (upTo === undefined) return
    const items: RaiseItem[] = []
    for (const f of batch) for (const r of f.raises) items.push(r)
    rec.inflight = true
    this.#inflight++
    this.endpoint.raiseBatch(items, { marks: new Map([[markKey(rec.serial), formatPos(upTo)]]) }).then((results) => {
      rec.inflight = false
      this.#inflight--
      rec.tracker.committed(upTo)
      rec.counters.handled += batch.length
      rec.counters.raised += items.length
      rec.lastSeq = results[results.length - 1]?.seq ?? rec.lastSeq
      this.#acknowledge(rec, upTo, batch.length)
      // [GW-PUMP-1] frames that arrived while this commit was in flight go into the next one
      // (before the event: a listener that throws must not stall the device)
      this.#pump(rec)
      this.#notifyIdle()
      this.emit('handled', { serial: rec.serial, upTo, frames: batch.length, raised: items.length })
    }, (err: unknown) => {
      rec.inflight = false
      this.#inflight--
      rec.counters.commitFailures++
      const error = toHeraldError(err)
      this.#rollback(rec, `${error.code}: ${error.message}`)
      if (this.listenerCount('error') > 0) this.emit('error', error)
      else this.#logger.error({ code: error.code, err: error }, `commit failed: ${error.message}`)
      this.#notifyIdle()
    })
  }

  /**
   * [DEV-ACK-1] [GW-ACK-2] Tells the device it may delete its frames up to `upTo`, whose events the
   * endpoint holds: at once while its persistence is durable; otherwise once the broker has
   * acknowledged every event raised from them and from the device's frames before them (`lastSeq`).
   * A frame that raised nothing waits for the frames before it, since an ACK is cumulative.
   */
  #acknowledge (rec: DeviceRecord, upTo: FramePos, frames: number): void {
    if (rec.awaiting.length === 0 && this.endpoint.persistence.stats().durable) {
      this.#tell(rec, upTo)
      return
    }
    const entry: AwaitingAck = { upTo, frames, seq: rec.lastSeq, ready: false }
    rec.awaiting.push(entry)
    rec.awaitingFrames += frames
    this.endpoint.whenAcked(entry.seq).then(() => {
      entry.ready = true
      let last: FramePos | null = null
      while (rec.awaiting[0]?.ready === true) {
        const done = rec.awaiting.shift() as AwaitingAck
        rec.awaitingFrames -= done.frames
        last = done.upTo
      }
      if (last !== null) this.#tell(rec, last)
    }, () => { /* closed first: the device resends to the next run */ })
  }

  #tell (rec: DeviceRecord, upTo: FramePos): void {
    rec.told = upTo
    if (rec.port !== null && rec.port.serial === rec.serial) rec.port.ack(upTo)
  }

  #rollback (rec: DeviceRecord, why: string): void {
    this.#logger.error({ serial: rec.serial, mark: formatPos(rec.tracker.durable), dropped: rec.pending.length, why }, 'reports not committed; the device will resend them')
    rec.pending = []
    rec.tracker.rollback()
    rec.port?.sync(true)
  }

  readonly #idleWaiters: Array<() => void> = []
  /** raiseBatch calls not yet settled, all devices. */
  #inflight = 0

  #notifyIdle (): void {
    if (this.#inflight > 0) return
    for (const w of this.#idleWaiters.splice(0)) w()
  }

  async #waitForCommits (): Promise<void> {
    for (const r of this.#records.values()) r.pending = []
    if (this.#inflight === 0) return
    await new Promise<void>((resolve) => { this.#idleWaiters.push(resolve) })
  }

  async #reportStatus (): Promise<void> {
    const s = this.status()
    this.#framesAtLastStatus = s.totals.frames
    this.#lastStatusAt = s.at
    this.#logger.info({
      online: `${s.devicesOnline}/${s.devices.length}`,
      framesPerSecond: s.framesPerSecond,
      corrupt: s.totals.corrupt,
      handled: s.totals.handled,
      raised: s.totals.raised,
      backlog: s.service.backlog,
      broker: s.service.state,
      durable: s.durable,
      acks: s.acks,
      lastAckAt: s.service.lastAckAt === null ? null : new Date(s.service.lastAckAt).toISOString()
    }, 'gateway status')
    this.emit('status', s)
    await this.#writeStatusFile(s).catch((err: unknown) => { this.#logger.warn({ err: (err as Error).message }, 'could not write status.json') })
  }

  /** Writes `status.json` in the data directory, atomically (write, then rename), 0600 [FILES-PRIVATE-1]. */
  async #writeStatusFile (s: GatewayStatus): Promise<void> {
    const path = join(this.config.dataDir, 'status.json')
    const { lastError, ...service } = s.service
    const doc = { ...s, service: { ...service, lastError: lastError === null ? null : `${lastError.code}: ${lastError.message}` } }
    await rm(`${path}.tmp`, { force: true }) // one a crash left: writeFile's mode applies to a new file only
    await writeFile(`${path}.tmp`, `${JSON.stringify(doc, null, 2)}\n`, { mode: PRIVATE_FILE_MODE })
    await rename(`${path}.tmp`, path)
  }
}

/** Opens the data directory (created 0700) and persistence (gateway.db, 0600), then starts the gateway. */
export async function startGateway (config: GatewayConfig, options: GatewayOptions = {}): Promise<Gateway> {
  await ensurePrivateDir(config.dataDir, 'gateway data directory', options.logger ?? silentLogger) // [FILES-PRIVATE-1]
  const persistence = options.persistence ?? await createTwoLevelServicePersistence({
    path: join(config.dataDir, 'gateway.db'),
    memoryCapacityBytes: config.persistence.memoryCapacityBytes,
    fileCapacityBytes: config.persistence.fileCapacityBytes,
    policy: config.persistence.policy,
    ...(options.logger === undefined ? {} : { logger: options.logger })
  })
  return new Gateway(config, persistence, options).start()
}

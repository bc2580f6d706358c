/**
 * `@herald/firmware-sim`: simulated devices speaking the device line protocol
 * (docs/device-protocol.md), for developing and testing gateways. See docs/firmware-sim.md.
 */
export { startSim, formatSummary, MAX_DEVICES, type SimOptions, type SimHandle, type SimDeviceInfo, type SimSummary, type DeviceGroup, type LinkOptions } from './sim.js'
export { SimDevice, serialFor, DEVICE_DEFAULTS, MODEL_STEP_MS, MAX_RATE, type SimDeviceOptions, type DeviceCounters, type EmittedReport, type DeviceNvState } from './device.js'
export { ReplayDevice, type ReplayDeviceOptions, type ReplayCounters } from './replay-device.js'
export {
  RecordingWriter, readRecording, parseRecording, formatRecording, recordedTime, RECORDING_FORMAT, RECORDING_VERSION, MAX_RECORDING_BYTES,
  type Recording, type RecordingHeader, type RecordedWrite
} from './recording.js'
export { validateFaults, FaultSchedule, FAULT_LIMITS, NO_FAULTS, type FaultOptions, type FaultTimes, type FaultCounters } from './faults.js'
export { parseDevices, parseDuration, parseFaults, parseLink, parseRate } from './options.js'
export { MODELS, findModel, thermostat, door, pump, type DeviceModel, type ModelDoc, type ModelEvent, type ModelInstance } from './models/index.js'
export { MemoryLink, type MemoryGatewayEnd } from './links/memory-link.js'
export { TcpLink, type TcpLinkOptions } from './links/tcp-link.js'
export { SerialLink, type SerialLinkOptions } from './links/serial-link.js'
export { MAX_PENDING_WRITE_BYTES, type DeviceLink, type LinkHandler, type LinkStats } from './links/link.js'
export { Random, hashParts } from './random.js'
export { realClock, ManualClock, type SimClock, type TimerHandle } from './clock.js'
export { SimError, SimConfigError, LinkError, RecordingError, SimErrorCode } from './errors.js'
export { simCommand, modelsHelp } from './command.js'
export { readNvStateFile, writeNvStateFile, NV_STATE_FORMAT, NV_STATE_VERSION } from './nv-state-file.js'

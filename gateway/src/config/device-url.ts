/**
 * Where a device is reached: `serial:///dev/ttyUSB0?baud=115200` (a tty) or `tcp://host:port`
 * (a serial device server such as ser2net or a Moxa NPort in raw TCP mode).
 */

/** A device on a local tty. */
export interface SerialAddress {
  readonly kind: 'serial'
  readonly path: string
  readonly baudRate: number
}

/** A device behind a serial device server (raw TCP). */
export interface TcpAddress {
  readonly kind: 'tcp'
  readonly host: string
  readonly port: number
}

export type DeviceAddress = SerialAddress | TcpAddress

/** Baud rates a tty accepts. */
const BAUD_RATES = new Set([1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600])

/** Parses a device URL; throws an Error whose message says what is wrong. */
export function parseDeviceUrl (url: string): DeviceAddress {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new Error(`"${url}" is not a device URL (use serial:///dev/ttyUSB0?baud=115200 or tcp://host:port)`)
  }
  if (u.protocol === 'serial:') {
    if (u.host !== '') throw new Error(`"${url}": a serial URL has no host; write serial:///dev/ttyUSB0 (three slashes)`)
    const path = decodeURIComponent(u.pathname)
    if (path === '' || path === '/') throw new Error(`"${url}": the tty path is missing`)
    for (const key of u.searchParams.keys()) {
      if (key !== 'baud') throw new Error(`"${url}": unknown parameter "${key}" (only baud)`)
    }
    const baudText = u.searchParams.get('baud') ?? '115200'
    const baudRate = Number(baudText)
    if (!BAUD_RATES.has(baudRate)) throw new Error(`"${url}": baud ${baudText} is not one of ${[...BAUD_RATES].join(', ')}`)
    return { kind: 'serial', path, baudRate }
  }
  if (u.protocol === 'tcp:') {
    if (u.hostname === '') throw new Error(`"${url}": the host is missing`)
    const port = Number(u.port)
    if (u.port === '' || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"${url}": a port from 1 to 65535 is required`)
    if (u.pathname !== '' && u.pathname !== '/') throw new Error(`"${url}": a tcp URL has no path`)
    if (u.search !== '') throw new Error(`"${url}": a tcp URL has no parameters`)
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
    return { kind: 'tcp', host, port }
  }
  throw new Error(`"${url}": unknown scheme ${u.protocol} (use serial: or tcp:)`)
}

/** The URL of an address, for logs and status. */
export function formatDeviceAddress (a: DeviceAddress): string {
  return a.kind === 'serial' ? `serial://${a.path}?baud=${a.baudRate}` : `tcp://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`
}

/** The dashboard's gateway scrapes against real HTTP servers that answer well, badly or not at all ([OPS-DASH-7]). */
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError } from '@herald/protocol'
import { GatewayScraper, parsePrometheusText } from './gateway-scraper.js'

const GOOD = `# HELP herald_gateway_backlog_events Events raised and not yet acknowledged by the broker
# TYPE herald_gateway_backlog_events gauge
herald_gateway_backlog_events 12
herald_gateway_backlog_bytes 3400
herald_gateway_durable 1
herald_gateway_broker_connected 0
herald_gateway_device_line_up{line="plant"} 1
herald_gateway_device_line_up{line="pump \\"2\\""} 0
herald_gateway_frames_refused_total{line="plant",reason="corrupt"} 2
herald_gateway_frames_refused_total{line="plant",reason="duplicate"} 3
`

const servers: Server[] = []
const sockets = new Set<Socket>()
afterEach(async () => {
  for (const s of sockets) s.destroy()
  sockets.clear()
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => { s.close(resolve) })))
})

async function serve (answer: (res: ServerResponse) => void): Promise<string> {
  const s = createServer((_req, res) => { answer(res) })
  s.on('connection', (c) => { sockets.add(c) })
  servers.push(s)
  await new Promise<void>((resolve) => { s.listen(0, '127.0.0.1', resolve) })
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}/metrics`
}

/** A port nothing listens on. */
async function closedPort (): Promise<string> {
  const s = createServer()
  await new Promise<void>((resolve) => { s.listen(0, '127.0.0.1', resolve) })
  const port = (s.address() as AddressInfo).port
  await new Promise((resolve) => { s.close(resolve) })
  return `http://127.0.0.1:${port}/metrics`
}

describe('gateway scraper [OPS-DASH-7]', () => {
  it('reads backlog, durability, broker link, device lines and refused frames out of a gateway\'s metrics', async () => {
    const url = await serve((res) => { res.end(GOOD) })
    const g = new GatewayScraper({ urls: [url] })
    await g.scrapeAll()
    expect(g.list()).toEqual([{
      url,
      up: true,
      problem: null,
      checkedAt: expect.any(Number) as unknown,
      backlogEvents: 12,
      backlogBytes: 3400,
      durable: true,
      brokerConnected: false,
      lines: [{ line: 'plant', up: true, framesRefused: 5 }, { line: 'pump "2"', up: false, framesRefused: 0 }]
    }])
  })

  it('shows as down, with the reason, a gateway that is unreachable, answers garbage, an error, too much, or too late', async () => {
    const unreachable = await closedPort()
    const garbage = await serve((res) => { res.end('<html>hello</html>\n\0\0 not metrics {{{') })
    const error = await serve((res) => { res.statusCode = 500; res.end('oops') })
    const large = await serve((res) => { res.end(`${GOOD}${'# padding\n'.repeat(1000)}`) })
    const chunked = await serve((res) => {
      res.write(GOOD)
      res.end('x'.repeat(20_000))
    })
    const silent = await serve(() => { /* never answers */ })
    const g = new GatewayScraper({ urls: [unreachable, garbage, error, large, chunked, silent], maxBytes: 4096, timeoutMs: 300 })
    const t0 = Date.now()
    await g.scrapeAll()
    expect(Date.now() - t0).toBeLessThan(20_000)
    const [u, ga, e, l, c, s] = g.list()
    expect(u).toMatchObject({ up: false, backlogEvents: null, problem: expect.stringMatching(/ECONNREFUSED/) as unknown })
    expect(ga).toMatchObject({ up: false, problem: expect.stringMatching(/not a Herald gateway/) as unknown })
    expect(e).toMatchObject({ up: false, problem: 'answered HTTP 500' })
    expect(l).toMatchObject({ up: false, problem: expect.stringMatching(/more than 4096/) as unknown })
    expect(c).toMatchObject({ up: false, problem: expect.stringMatching(/more than 4096/) as unknown })
    expect(s).toMatchObject({ up: false, problem: 'no answer within 300 ms' })
  })

  it('refuses what is not an http(s) URL, and too many gateways', () => {
    expect(() => new GatewayScraper({ urls: ['not a url'] })).toThrow(ConfigError)
    expect(() => new GatewayScraper({ urls: ['file:///etc/passwd'] })).toThrow(/http/)
    expect(() => new GatewayScraper({ urls: Array.from({ length: 33 }, (_, i) => `http://127.0.0.1:${i + 1}/metrics`) })).toThrow(/at most 32/)
  })

  it('parses Prometheus text, skipping lines that are not samples', () => {
    expect(parsePrometheusText('# c\na 1\nb{x="y",z="w"} 2.5 123\n!!\nc NaNx\n')).toEqual([
      { name: 'a', labels: {}, value: 1 },
      { name: 'b', labels: { x: 'y', z: 'w' }, value: 2.5 }
    ])
  })
})

// The demo page of `herald demo` and `herald broker --ws-demo-page`: the browser client
// (@herald/client-endpoint/browser, bundled as herald-client.js) subscribes over MQTT over WebSocket
// on this page's own host (/mqtt) and shows each event as it is handled. Plain JavaScript, no
// framework. demo-config.json (served beside it) names the events, and for `herald demo` the
// example user to log in with.
import { ClientEndpoint, IndexedDbPositionStore, clientKey } from './herald-client.js'

/** Rows kept on the page (older ones are removed: the page runs for hours). */
const MAX_ROWS = 500
/** Characters of a payload shown. */
const MAX_PAYLOAD_CHARS = 300

const $ = (id) => document.getElementById(id)
const form = $('login')
const statusLine = $('status')
const errorLine = $('error')
const table = $('events-table')
const counts = $('counts')

/** For tests and the curious: what the page did. */
const demo = { handled: 0, redelivered: 0, state: 'closed', errors: [] }
globalThis.heraldDemo = demo

let client = null
let positions = null

const config = await fetch('demo-config.json', { cache: 'no-store' }).then((r) => r.ok ? r.json() : {}).catch(() => ({}))
const url = config.url ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/mqtt`
const query = new URLSearchParams(location.search)
$('user').value = query.get('user') ?? config.user ?? ''
$('password').value = query.get('password') ?? config.password ?? ''
$('client-name').value = query.get('clientName') ?? config.clientName ?? 'demo-page'
$('events').value = query.get('events') ?? (config.events ?? []).join(',')

function showStatus (state, detail) {
  demo.state = state
  statusLine.dataset.state = state
  statusLine.textContent = detail === undefined ? `${state} · ${url}` : `${state} · ${url} · ${detail}`
}

/** A typed error (HeraldError: name, code, message) on the page. */
function showError (err, context) {
  const code = err?.code ?? 'ERROR'
  // the code is the error's type (stable, documented); a minified bundle may shorten class names
  const text = `${context !== undefined ? `${context}: ` : ''}${code}: ${err?.message ?? String(err)}`
  demo.errors.push({ code, message: err?.message ?? String(err), context: context ?? null })
  errorLine.hidden = false
  errorLine.textContent = text
}

function clearError () {
  errorLine.hidden = true
  errorLine.textContent = ''
}

function cell (text, className) {
  const td = document.createElement('td')
  td.textContent = text
  if (className !== undefined) td.className = className
  return td
}

function payloadText (e) {
  if (e.isNull) return '(null)'
  const p = e.payload
  let text
  if (p instanceof Uint8Array) text = `${p.byteLength} bytes: ${Array.from(p.subarray(0, 32), (b) => b.toString(16).padStart(2, '0')).join(' ')}${p.byteLength > 32 ? ' …' : ''}`
  else if (typeof p === 'string') text = JSON.stringify(p)
  else text = JSON.stringify(p)
  return text.length > MAX_PAYLOAD_CHARS ? `${text.slice(0, MAX_PAYLOAD_CHARS)} …` : text
}

function showEvent (e) {
  demo.handled++
  if (e.redelivered) demo.redelivered++
  const tr = document.createElement('tr')
  tr.className = 'event'
  tr.dataset.event = e.name
  tr.dataset.position = String(e.position)
  tr.append(
    cell(new Date().toLocaleTimeString([], { hour12: false })),
    cell(e.name, 'name'),
    cell(e.serviceId, 'service'),
    cell(String(e.position), 'position'),
    cell(payloadText(e), 'payload'),
    cell(e.redelivered ? 'redelivered' : '', e.redelivered ? 'redelivered' : 'first')
  )
  table.prepend(tr)
  while (table.rows.length > MAX_ROWS) table.deleteRow(table.rows.length - 1)
  counts.textContent = `${demo.handled} events handled, ${demo.redelivered} flagged redelivered`
}

async function disconnect () {
  const c = client
  const p = positions
  client = null
  positions = null
  $('disconnect').disabled = true
  if (c !== null) await c.close().catch(() => {})
  if (p !== null) {
    try {
      await p.close()
    } catch {
      // closed already (with the endpoint)
    }
  }
}

async function connect () {
  await disconnect()
  clearError()
  const user = $('user').value.trim()
  const password = $('password').value
  const clientName = $('client-name').value.trim()
  const events = $('events').value.split(',').map((s) => s.trim()).filter((s) => s !== '')
  $('disconnect').disabled = false
  showStatus('connecting')
  try {
    // positions survive reloads; a second tab of the same client name takes them over (the first stops)
    const store = await IndexedDbPositionStore.open({ clientKey: clientKey(user === '' ? null : user, clientName), ifLocked: 'takeover' })
    positions = store
    void store.lost?.then((err) => {
      if (positions !== store) return
      showError(err, 'positions taken over by another tab')
      void disconnect().then(() => { showStatus('closed') })
    })
    const c = new ClientEndpoint({ url, clientName, ...(user !== '' ? { user, password } : {}), positions: store })
    client = c
    c.on('status', (s) => {
      if (client !== c) return
      showStatus(s.state, s.lastError !== null ? `${s.lastError.code}: ${s.lastError.message}` : undefined)
    })
    c.on('error', (err) => {
      if (client !== c) return
      showError(err)
      // refused credentials: stop retrying, let the user fix them
      if (err.code === 'BAD_CREDENTIALS' || err.code === 'NOT_AUTHORIZED') void disconnect().then(() => { showStatus('closed', err.code) })
    })
    c.start()
    await Promise.all(events.map((name) => c.subscribe(name, { start: 'all' }, showEvent).catch((err) => {
      if (client === c) showError(err, `subscribe ${name}`)
    })))
  } catch (err) {
    showError(err)
    await disconnect()
    showStatus('closed')
  }
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault()
  void connect()
})
$('disconnect').addEventListener('click', () => { void disconnect().then(() => { showStatus('closed') }) })
showStatus('closed')
if (config.autoConnect === true || query.get('connect') === '1') void connect()

// The Herald broker dashboard ([OPS-DASH-4]): logs in at /admin/login, then reads /admin/feed
// (Server-Sent Events, one message a second) and draws it. Nothing is fetched from elsewhere.
const $ = (id) => document.getElementById(id)
const HISTORY = 300
let history = []
let feed = null

function show (id, on) { $(id).hidden = !on }
function num (n) { return n >= 100 ? Math.round(n).toLocaleString('en') : (Math.round(n * 10) / 10).toLocaleString('en') }
function cell (tr, text, cls) {
  const td = document.createElement('td')
  td.textContent = text
  if (cls) td.className = cls
  tr.appendChild(td)
  return td
}
function fill (tbody, rows, build) {
  tbody.replaceChildren(...rows.map((r) => { const tr = document.createElement('tr'); build(tr, r); return tr }))
}

async function post (path, body) {
  const res = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}), credentials: 'same-origin' })
  let data = {}
  try { data = await res.json() } catch { // not JSON: the status says it
  }
  return { status: res.status, data }
}

function loggedOut (message) {
  if (feed !== null) { feed.close(); feed = null }
  show('dashboard', false)
  show('who', false)
  show('login', true)
  $('status').textContent = 'not logged in'
  if (message) { $('login-error').textContent = message; show('login-error', true) }
}

function loggedIn (user, reload) {
  $('user').textContent = user
  show('who', true)
  show('reload-site', reload)
  show('login', false)
  show('login-error', false)
  show('dashboard', true)
  openFeed()
}

function openFeed () {
  if (feed !== null) feed.close()
  const q = new URLSearchParams()
  const event = $('filter-event').value.trim()
  const service = $('filter-service').value.trim()
  if (event) q.set('event', event)
  if (service) q.set('service', service)
  feed = new EventSource(`/admin/feed${q.size > 0 ? `?${q}` : ''}`)
  feed.onmessage = (m) => { draw(JSON.parse(m.data)) }
  feed.addEventListener('logout', () => { loggedOut('your session ended; log in again') })
  feed.onerror = async () => {
    $('status').textContent = 'feed interrupted; retrying…'
    if (feed !== null && feed.readyState === EventSource.CLOSED) {
      const res = await fetch('/admin/session', { credentials: 'same-origin' })
      if (res.status === 401) loggedOut('your session ended; log in again')
      else setTimeout(openFeed, 2000)
    }
  }
}

function draw (d) {
  $('status').textContent = `live · ${new Date(d.t).toLocaleTimeString()}`
  if (d.history) history = d.history.slice(-HISTORY)
  else if (d.sample) { history.push(d.sample); if (history.length > HISTORY) history.shift() }
  $('rate-in').textContent = num(d.rates.in)
  $('rate-out').textContent = num(d.rates.out)
  $('stored-events').textContent = num(d.storedEvents)
  $('connections').textContent = `${d.connections.service} · ${d.connections.client} · ${d.connections.guest} · ${d.connections.plain ?? 0}`
  const pushed = d.events.reduce((a, e) => a + e.pushedOut, 0)
  const expired = d.events.reduce((a, e) => a + e.expired, 0)
  $('drops').textContent = `${num(pushed)} · ${num(expired)}`
  $('logins').textContent = `${num(d.logins.failed)} · ${num(d.logins.throttled)}`
  chart()
  fill($('events').tBodies[0], d.events, (tr, e) => {
    cell(tr, e.name)
    cell(tr, e.stored === null ? '?' : num(e.stored))
    cell(tr, num(e.inPerSec)); cell(tr, num(e.outPerSec))
    cell(tr, num(e.storedTotal)); cell(tr, num(e.deliveredTotal))
    cell(tr, num(e.pushedOut)); cell(tr, num(e.expired)); cell(tr, num(e.refused))
    cell(tr, num(e.subscriptions)); cell(tr, num(e.maxLag))
  })
  $('services').replaceChildren(...d.connected.services.map((s) => { const li = document.createElement('li'); li.textContent = s; return li }))
  fill($('clients').tBodies[0], d.connected.clients, (tr, c) => {
    cell(tr, c.guest ? `${c.key} (guest)` : c.key)
    cell(tr, c.subscriptions.map((s) => `${s.event} (${s.lag})`).join(', ') + (c.subscriptionsLeftOut > 0 ? ` and ${c.subscriptionsLeftOut} more` : ''))
  })
  $('clients-more').textContent = `and ${d.connected.clientsLeftOut} more`
  show('clients-more', d.connected.clientsLeftOut > 0)
  show('gateways-section', d.gateways.length > 0)
  fill($('gateways').tBodies[0], d.gateways, (tr, g) => {
    cell(tr, g.url)
    cell(tr, g.up ? 'up' : `down: ${g.problem}`, g.up ? 'up' : 'down')
    cell(tr, g.up ? `${num(g.backlogEvents)} events, ${g.backlogBytes === null ? '?' : num(g.backlogBytes)} bytes` : '')
    cell(tr, g.durable === null ? '' : g.durable ? 'yes' : 'NO')
    cell(tr, g.brokerConnected === null ? '' : g.brokerConnected ? 'connected' : 'not connected')
    cell(tr, g.lines.map((l) => `${l.line} ${l.up ? 'up' : 'down'}${l.framesRefused > 0 ? `, ${l.framesRefused} refused` : ''}`).join('; '))
  })
  fill($('tail').tBodies[0], d.tail, (tr, e) => {
    cell(tr, String(e.position))
    cell(tr, new Date(e.receivedAt).toLocaleTimeString())
    cell(tr, e.event); cell(tr, e.service); cell(tr, num(e.bytes))
    cell(tr, e.isNull ? '(null)' : e.preview + (e.truncated ? '…' : ''), 'payload').title = e.preview
  })
  $('feeds').textContent = `dashboard feeds open: ${d.feeds.open} of ${d.feeds.max}; closed for not reading: ${d.feeds.dropped}`
}

function chart () {
  const n = history.length
  const max = Math.max(1, ...history.map((s) => Math.max(s.in, s.out)))
  // the x axis spans the history there is, at least a minute, at most five
  const span = Math.min(HISTORY, Math.max(60, n))
  const points = (key) => history.map((s, i) => `${(600 * (span - n + i) / (span - 1)).toFixed(1)},${(155 - 140 * s[key] / max).toFixed(1)}`).join(' ')
  $('line-in').setAttribute('points', points('in'))
  $('line-out').setAttribute('points', points('out'))
  $('chart-max').textContent = `scale: ${num(max)}/s`
  $('history-span').textContent = n >= 2 ? `${Math.round((history[n - 1].t - history[0].t) / 1000)} s` : '0 s'
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  show('login-error', false)
  $('login-submit').disabled = true
  try {
    const r = await post('/admin/login', { user: $('login-user').value, password: $('login-password').value })
    $('login-password').value = ''
    if (r.status === 200) loggedIn(r.data.user, r.data.reload)
    else { $('login-error').textContent = r.data.error ?? `login refused (HTTP ${r.status})`; show('login-error', true) }
  } finally {
    $('login-submit').disabled = false
  }
})
$('logout').addEventListener('click', async () => { await post('/admin/logout'); loggedOut() })
$('filter').addEventListener('submit', (ev) => { ev.preventDefault(); openFeed() })
$('reload-site').addEventListener('click', async () => {
  const r = await post('/admin/reload-site')
  const p = $('reload-result')
  p.textContent = r.status === 200 ? `site reloaded: ${JSON.stringify(r.data)}` : `site not reloaded: ${r.data.error ?? `HTTP ${r.status}`}`
  p.className = r.status === 200 ? 'up' : 'down'
  show('reload-result', true)
})

const s = await fetch('/admin/session', { credentials: 'same-origin' })
if (s.status === 200) { const d = await s.json(); loggedIn(d.user, d.reload) } else loggedOut()

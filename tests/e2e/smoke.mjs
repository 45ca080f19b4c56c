#!/usr/bin/env node
// Smoke test of harness.mjs: spawns it, drives every control endpoint, checks the fake's
// API sees the effects, then checks the harness exits on SIGTERM and on stdin close.
// Usage: node tests/e2e/smoke.mjs   (exit code 0 only if every check passed)

import { spawn } from 'node:child_process'
import http from 'node:http'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const HARNESS = fileURLToPath(new URL('./harness.mjs', import.meta.url))
let passed = 0
let failed = 0

function check(name, condition, detail) {
  if (condition) {
    passed++
    console.log(`ok   ${name}`)
  } else {
    failed++
    console.log(`FAIL ${name}${detail === undefined ? '' : ` -- ${JSON.stringify(detail)}`}`)
  }
}

function startHarness() {
  const child = spawn(process.execPath, [HARNESS], { stdio: ['pipe', 'pipe', 'pipe'] })
  child.stderr.on('data', (d) => process.stderr.write(`  [harness] ${d}`))
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const lines = createInterface({ input: child.stdout })
  const extra = []
  const ready = new Promise((resolve, reject) => {
    lines.once('line', (line) => {
      lines.on('line', (l) => extra.push(l)) // anything after the first line is a bug
      resolve(JSON.parse(line))
    })
    child.once('exit', (code) => reject(new Error(`harness exited early (${code})`)))
    setTimeout(() => reject(new Error('harness not ready after 30 s')), 30_000).unref()
  })
  return { child, ready, exited, extra }
}

const withTimeout = (promise, ms) =>
  Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve('timeout'), ms))])

async function call(base, method, path, { body, key } = {}) {
  const headers = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (key) headers.authorization = `Bearer ${key}`
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  let json = null
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: res.status, json, text }
}

// A tiny webhook receiver that records what it got and answers `nextStatus`.
async function startReceiver() {
  const received = []
  let nextStatus = 200
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
      res.writeHead(nextStatus, { 'content-type': 'text/plain' })
      res.end(`got it ${nextStatus}`)
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}/webhooks/seam`,
    received,
    setStatus: (s) => (nextStatus = s),
    close: () => server.close(),
  }
}

async function main() {
  const h = startHarness()
  const info = await h.ready
  const { seam_api_url: seam, control_url: ctl, device_ids: devices } = info
  let key = info.api_key

  check('ready line has every field', ['seam_api_url', 'api_key', 'device_ids', 'workspace_id', 'control_url', 'webhook_secret'].every((k) => info[k] != null), info)
  check('urls are on 127.0.0.1', seam.startsWith('http://127.0.0.1:') && ctl.startsWith('http://127.0.0.1:'))
  check('api key starts with seam_', key.startsWith('seam_'))
  check('at least 3 devices', devices.length >= 3)
  check('webhook secret is whsec_ + base64 of >= 24 bytes', /^whsec_[A-Za-z0-9+/]+=*$/.test(info.webhook_secret) && Buffer.from(info.webhook_secret.slice(6), 'base64').length >= 24)

  let r = await call(ctl, 'GET', '/health')
  check('GET /health', r.status === 200 && r.json?.ok === true, r.json)

  r = await call(seam, 'GET', '/devices/list', { key })
  check('fake serves the seeded devices', r.status === 200 && devices.every((id) => r.json.devices.some((d) => d.device_id === id)), r.status)

  // --- codes
  r = await call(ctl, 'POST', '/codes', { body: { device_id: devices[0], name: 'smoke', code: '4321' } })
  const code = r.json?.access_code
  check('POST /codes creates a code', r.status === 200 && code?.access_code_id && code.status === 'setting' && code.code === '4321', r.json)
  const id = code.access_code_id
  const created = r.json?.event
  check('POST /codes returns the access_code.created event', created?.event_type === 'access_code.created' && created.access_code_id === id && created.device_id === devices[0] && created.workspace_id === info.workspace_id && created.occurred_at, r.json)
  const get = () => call(seam, 'GET', `/access_codes/get?access_code_id=${encodeURIComponent(id)}`, { key })

  r = await get()
  check('fake API serves it with status setting', r.status === 200 && r.json.access_code.status === 'setting', r.json)

  r = await call(ctl, 'POST', '/codes', { body: { device_id: devices[0], code: '4321' } })
  check('duplicate PIN on a device -> 409 from the fake', r.status === 409 && typeof r.json?.error === 'string', r.json)

  const startsAt = new Date(Date.now() + 3600_000).toISOString()
  const endsAt = new Date(Date.now() + 7200_000).toISOString()
  r = await call(ctl, 'POST', '/codes', { body: { device_id: devices[1], name: 'tb', starts_at: startsAt, ends_at: endsAt } })
  check('time-bound code', r.status === 200 && r.json.access_code.type === 'time_bound' && r.json.access_code.status === 'unset' && r.json.access_code.starts_at === startsAt, r.json)

  r = await call(ctl, 'POST', `/codes/${id}/state`, { body: { status: 'set' } })
  check('POST /codes/:id/state status=set answers the API view', r.status === 200 && r.json.access_code.status === 'set', r.json)
  r = await get()
  check('fake API now says set', r.status === 200 && r.json.access_code.status === 'set', r.json)

  const warning = { warning_code: 'delay_in_setting_on_device', message: 'slow lock', created_at: new Date().toISOString() }
  r = await call(ctl, 'POST', `/codes/${id}/state`, { body: { warnings: [warning] } })
  r = await get()
  check('warning visible via the fake API', r.json?.access_code?.warnings?.[0]?.warning_code === 'delay_in_setting_on_device' && r.json.access_code.status === 'set', r.json)

  r = await call(ctl, 'POST', '/codes/nope/state', { body: { status: 'set' } })
  check('state of unknown code -> 404', r.status === 404 && r.json?.error, r.json)

  // --- events
  const since = new Date(Date.now() - 1000).toISOString()
  r = await call(ctl, 'POST', '/events', { body: { event_type: 'access_code.set_on_device', access_code_id: id } })
  const ev = r.json?.event
  check(
    'POST /events returns a full flat event',
    r.status === 200 && ev && ['event_id', 'event_type', 'workspace_id', 'device_id', 'connected_account_id', 'access_code_id', 'created_at', 'occurred_at'].every((k) => ev[k] != null) && ev.device_id === devices[0] && ev.workspace_id === info.workspace_id && ev.code === '4321',
    r.json,
  )
  r = await call(ctl, 'POST', '/events', { body: { event_type: 'access_code.delay_in_setting_on_device', access_code_id: id, access_code_warnings: [warning] } })
  const ev2 = r.json?.event
  check('extra fields are merged into the event', ev2?.access_code_warnings?.[0]?.warning_code === 'delay_in_setting_on_device', r.json)
  check('the lists the document requires for the type are filled in, empty', ['access_code_errors', 'device_errors', 'device_warnings', 'connected_account_errors', 'connected_account_warnings'].every((k) => Array.isArray(ev2?.[k]) && ev2[k].length === 0), r.json)

  r = await call(seam, 'POST', '/events/list', { key, body: { since, access_code_ids: [id] } })
  const listed = r.json?.events ?? []
  check('events show up in /events/list', r.status === 200 && listed.some((e) => e.event_id === ev.event_id) && listed.some((e) => e.event_id === ev2.event_id), r.json)
  check('listed event equals the returned one', JSON.stringify(listed.find((e) => e.event_id === ev.event_id)) === JSON.stringify(ev))

  r = await call(ctl, 'POST', '/events', { body: { access_code_id: id } })
  check('event without event_type -> 400', r.status === 400, r.json)

  // --- delete
  r = await call(ctl, 'DELETE', `/codes/${id}`)
  check('DELETE /codes/:id', r.status === 200 && r.json?.ok === true, r.json)
  r = await get()
  check('fake API answers 404 after delete', r.status === 404 && r.json?.error?.type, r.json)
  r = await call(ctl, 'DELETE', `/codes/${id}`)
  check('DELETE again -> 404', r.status === 404, r.json)
  r = await call(ctl, 'POST', '/events', { body: { event_type: 'access_code.removed_from_device', access_code_id: id } })
  check('event for a deleted code still carries device_id', r.status === 200 && r.json.event.device_id === devices[0], r.json)

  // --- sign / verify
  r = await call(ctl, 'POST', '/sign', {
    body: { payload: '{"test": 2432232314}', msg_id: 'msg_p5jXN8AQM9LWM0D4loKWxJek', timestamp: 1614265330, secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' },
  })
  check('/sign matches the published Svix test vector', r.json?.headers?.['svix-signature'] === 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=', r.json)

  const payload = JSON.stringify(ev)
  const now = Math.floor(Date.now() / 1000)
  r = await call(ctl, 'POST', '/sign', { body: { payload, msg_id: 'msg_smoke_1', timestamp: now } })
  const signed = r.json?.headers
  check('/sign returns the three svix headers', signed?.['svix-id'] === 'msg_smoke_1' && signed['svix-timestamp'] === String(now) && signed['svix-signature']?.startsWith('v1,'), r.json)
  r = await call(ctl, 'POST', '/verify', { body: { payload, headers: signed } })
  check('/verify accepts it (Seam SDK)', r.json?.ok === true && r.json.event?.event_id === ev.event_id, r.json)
  r = await call(ctl, 'POST', '/verify', { body: { payload: payload.replace('set_on_device', 'set_on_devicf'), headers: signed } })
  check('/verify rejects a tampered payload', r.status === 200 && r.json?.ok === false && r.json.error, r.json)
  const upper = Object.fromEntries(Object.entries(signed).map(([k, v]) => [k.toUpperCase(), v]))
  r = await call(ctl, 'POST', '/verify', { body: { payload, headers: upper } })
  check('/verify ignores header case', r.json?.ok === true, r.json)
  r = await call(ctl, 'POST', '/verify', { body: { payload, headers: signed, secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' } })
  check('/verify rejects another secret', r.json?.ok === false, r.json)

  // --- deliver
  const rx = await startReceiver()
  r = await call(ctl, 'POST', '/deliver', { body: { url: rx.url, event: ev } })
  const got = rx.received[0]
  check('/deliver reports the target answer', r.status === 200 && r.json?.status === 200 && r.json.body === 'got it 200' && r.json.msg_id?.startsWith('msg_'), r.json)
  check('delivered body is JSON.stringify(event)', got?.body === JSON.stringify(ev))
  check('delivered headers', got?.headers['svix-id'] === r.json.msg_id && /^\d+$/.test(got?.headers['svix-timestamp']) && got?.headers['svix-signature']?.startsWith('v1,') && got?.headers['content-type'] === 'application/json', got?.headers)
  const rv = await call(ctl, 'POST', '/verify', { body: { payload: got.body, headers: got.headers } })
  check('delivered request verifies with the harness secret', rv.json?.ok === true, rv.json)

  rx.setStatus(500)
  const again = await call(ctl, 'POST', '/deliver', { body: { url: rx.url, event: ev, msg_id: r.json.msg_id } })
  check('redelivery keeps the msg id and reports a 500', again.json?.status === 500 && rx.received[1]?.headers['svix-id'] === r.json.msg_id, again.json)

  const otherSecret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
  rx.setStatus(204)
  r = await call(ctl, 'POST', '/deliver', { body: { url: rx.url, event: ev, secret: otherSecret, timestamp: 1614265330, msg_id: 'msg_fixed' } })
  check('deliver with explicit secret/timestamp/msg_id', r.json?.status === 204 && rx.received[2]?.headers['svix-timestamp'] === '1614265330' && rx.received[2]?.headers['svix-id'] === 'msg_fixed', r.json)
  rx.close()

  const closedPort = await new Promise((resolve) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
  r = await call(ctl, 'POST', '/deliver', { body: { url: `http://127.0.0.1:${closedPort}/nowhere`, event: ev } })
  check('delivery to a closed port -> 502', r.status === 502 && r.json?.error, r.json)

  // --- API key rotation
  r = await call(ctl, 'POST', '/api_keys/rotate')
  const { old_key, new_key } = r.json ?? {}
  check('/api_keys/rotate', r.status === 200 && old_key === key && new_key?.startsWith('seam_') && new_key !== old_key, r.json)
  r = await call(seam, 'GET', '/devices/list', { key: old_key })
  check('old key -> 401', r.status === 401 && r.json?.error?.type === 'unauthorized', r.json)
  r = await call(seam, 'GET', '/devices/list', { key: new_key })
  check('new key -> 200', r.status === 200 && r.json?.devices?.length >= 3, r.status)
  key = new_key
  r = await call(ctl, 'POST', '/api_keys', { body: { token: old_key } })
  check('POST /api_keys adds the old key back', r.status === 200 && r.json?.token === old_key, r.json)
  r = await call(seam, 'GET', '/devices/list', { key: old_key })
  check('re-added key -> 200', r.status === 200, r.status)
  r = await call(ctl, 'POST', '/api_keys', { body: { token: old_key } })
  check('adding an existing key -> 409', r.status === 409, r.json)
  r = await call(ctl, 'POST', '/api_keys', { body: { token: 'nope' } })
  check('malformed key -> 400', r.status === 400, r.json)
  r = await call(ctl, 'POST', '/api_keys', {})
  check('POST /api_keys without token makes a fresh one', r.status === 200 && r.json?.token?.startsWith('seam_') && r.json.token !== key, r.json)
  r = await call(seam, 'GET', '/devices/list', { key: r.json?.token })
  check('fresh key -> 200', r.status === 200, r.status)
  r = await call(ctl, 'POST', '/codes', { body: { device_id: devices[2] } })
  check('control API keeps working after rotation', r.status === 200 && r.json.access_code.access_code_id, r.json)

  // --- the contract: every call above went through the front, checked against Seam's
  // OpenAPI document; the fake's answers, as the front fixes them, break nothing.
  r = await call(ctl, 'GET', '/contract/violations')
  const before = r.json
  check('contract report: every Seam call so far checked, no violation', r.status === 200 && before.requests_checked >= 10 && before.violation_count === 0 && before.violations.length === 0, before)
  check('contract report: the undocumented 404 of a deleted code is a note', before.notes.some((n) => n.path === '/access_codes/get' && n.status === 404 && /undocumented status 404/.test(n.message)), before.notes)
  check('contract report: per route', before.by_route['GET /access_codes/get']?.requests >= 3 && before.by_route['GET /devices/list']?.statuses?.['401'] >= 1, before.by_route)

  // Unmanaged codes: the fake has no /access_codes/unmanaged/get; the front answers it.
  r = await call(ctl, 'POST', '/unmanaged_codes', { body: { device_id: devices[2], name: 'found on the lock', code: '9090' } })
  const unmanaged = r.json?.access_code
  check('POST /unmanaged_codes: an unmanaged code, set', r.status === 200 && unmanaged?.is_managed === false && unmanaged.status === 'set' && unmanaged.code === '9090', r.json)
  r = await call(seam, 'GET', `/access_codes/unmanaged/get?access_code_id=${unmanaged.access_code_id}`, { key })
  check('GET /access_codes/unmanaged/get (the front) serves it', r.status === 200 && r.json?.ok === true && r.json.access_code?.access_code_id === unmanaged.access_code_id && r.json.access_code.is_managed === false && !('is_backup_access_code_available' in r.json.access_code), r.json)
  r = await call(seam, 'POST', '/access_codes/unmanaged/get', { key, body: { access_code_id: unmanaged.access_code_id } })
  check('POST /access_codes/unmanaged/get too', r.status === 200 && r.json?.access_code?.name === 'found on the lock', r.json)
  r = await call(seam, 'GET', `/access_codes/get?access_code_id=${unmanaged.access_code_id}`, { key })
  check('/access_codes/get does not serve an unmanaged code: 404 not_found', r.status === 404 && r.json?.error?.type === 'not_found' && r.json.ok === false && !('stack' in r.json.error), r.json)
  const managed = (await call(ctl, 'POST', '/codes', { body: { device_id: devices[2], name: 'managed', code: '8080' } })).json.access_code
  r = await call(seam, 'GET', `/access_codes/unmanaged/get?access_code_id=${managed.access_code_id}`, { key })
  check('/access_codes/unmanaged/get of a managed code: 404 not_found', r.status === 404 && r.json?.error?.type === 'not_found', r.json)
  r = await call(seam, 'GET', `/access_codes/unmanaged/get?access_code_id=${unmanaged.access_code_id}`, { key: 'seam_x_y' })
  check('/access_codes/unmanaged/get with a wrong key: the fake\'s 401', r.status === 401 && r.json?.error?.type === 'unauthorized', r.json)
  r = await call(seam, 'GET', `/access_codes/get?access_code_id=${managed.access_code_id}`, { key })
  check('/access_codes/get answers pending_mutations (the fake has none)', r.status === 200 && Array.isArray(r.json?.access_code?.pending_mutations), r.json)

  // /access_codes/list: that device's managed codes only, paged.
  const second = (await call(ctl, 'POST', '/codes', { body: { device_id: devices[2], name: 'managed 2', code: '8081' } })).json.access_code
  r = await call(seam, 'POST', '/access_codes/list', { key, body: { device_id: devices[2] } })
  const listed2 = r.json?.access_codes ?? []
  check('/access_codes/list {device_id}: its managed codes only, with pagination', r.status === 200 && listed2.length >= 2 && listed2.every((c) => c.device_id === devices[2] && c.is_managed === true) && listed2.some((c) => c.access_code_id === second.access_code_id) && r.json.pagination?.has_next_page === false && r.json.pagination.next_page_cursor === null, r.json)
  r = await call(seam, 'GET', `/access_codes/list?device_id=${devices[2]}&limit=1`, { key })
  const page1 = r.json
  check('/access_codes/list limit=1: one code, a cursor and a next_page_url on the front', r.status === 200 && page1.access_codes.length === 1 && page1.pagination.has_next_page === true && typeof page1.pagination.next_page_cursor === 'string' && page1.pagination.next_page_url.startsWith(`${seam}/access_codes/list?`), page1)
  r = await call(seam, 'POST', '/access_codes/list', { key, body: { device_id: devices[2], limit: 1, page_cursor: page1.pagination.next_page_cursor } })
  check('/access_codes/list page_cursor: the next page', r.status === 200 && r.json.access_codes.length === 1 && r.json.access_codes[0].access_code_id !== page1.access_codes[0].access_code_id, r.json)
  r = await fetch(page1.pagination.next_page_url, { headers: { authorization: `Bearer ${key}` } }).then(async (res) => ({ status: res.status, json: await res.json() }))
  check('/access_codes/list next_page_url: the same next page', r.status === 200 && r.json.access_codes[0]?.access_code_id !== page1.access_codes[0].access_code_id, r.json)
  r = await call(seam, 'POST', '/access_codes/list', { key, body: { device_id: devices[0], page_cursor: page1.pagination.next_page_cursor } })
  check('/access_codes/list: a cursor with other parameters -> 400', r.status === 400 && r.json?.error?.type === 'mismatched_page_parameters', r.json)
  r = await call(seam, 'POST', '/access_codes/list', { key, body: { access_code_ids: [second.access_code_id] } })
  check('/access_codes/list {access_code_ids}', r.status === 200 && r.json.access_codes.length === 1 && r.json.access_codes[0].access_code_id === second.access_code_id, r.json)
  r = await call(seam, 'POST', '/access_codes/unmanaged/list', { key, body: { device_id: devices[2], limit: 5 } })
  check('/access_codes/unmanaged/list: unmanaged codes, with pagination', r.status === 200 && r.json.access_codes.length === 1 && r.json.access_codes[0].access_code_id === unmanaged.access_code_id && r.json.pagination?.has_next_page === false, r.json)

  // /devices/list pages; its next_page_url is the front's and names `page_cursor`.
  r = await call(seam, 'GET', '/devices/list?limit=1', { key })
  const devicePage = r.json
  check('/devices/list limit=1: next_page_url on the front with page_cursor', r.status === 200 && devicePage.devices.length === 1 && devicePage.pagination.next_page_url?.startsWith(`${seam}/devices/list?`) && new URL(devicePage.pagination.next_page_url).searchParams.has('page_cursor') && !new URL(devicePage.pagination.next_page_url).searchParams.has('next_page_cursor'), devicePage)
  r = await fetch(devicePage.pagination.next_page_url, { headers: { authorization: `Bearer ${key}` } }).then(async (res) => ({ status: res.status, json: await res.json() }))
  check('/devices/list next_page_url: the next device', r.status === 200 && r.json.devices[0]?.device_id !== devicePage.devices[0].device_id, r.json)
  r = await call(seam, 'GET', '/workspaces/get', { key: 'seam_x_y' })
  check('/workspaces/get with an unknown key: 401 unauthorized (the fake says 400)', r.status === 401 && r.json?.error?.type === 'unauthorized', r.json)
  r = await call(seam, 'GET', '/workspaces/get', { key })
  check('/workspaces/get: the seeded workspace (organization_id null)', r.status === 200 && r.json.workspace?.workspace_id === info.workspace_id && r.json.workspace.organization_id === null, r.json)

  // /events/list: event_types, limit, access_code_id.
  r = await call(seam, 'POST', '/events/list', { key, body: { since, event_types: ['access_code.set_on_device'] } })
  check('/events/list event_types filters', r.status === 200 && r.json.events.length >= 1 && r.json.events.every((e) => e.event_type === 'access_code.set_on_device'), r.json)
  r = await call(seam, 'POST', '/events/list', { key, body: { since, limit: 1 } })
  check('/events/list limit is honoured', r.status === 200 && r.json.events.length === 1, r.json)
  r = await call(seam, 'GET', `/events/list?since=${encodeURIComponent(since)}&access_code_id=${id}`, { key })
  check('/events/list access_code_id filters (the fake\'s compares with device_id)', r.status === 200 && r.json.events.length >= 2 && r.json.events.every((e) => e.access_code_id === id), r.json)

  // --- workspaces: B is seeded with its own key, devices and secret; C is added.
  const [wsA, wsB] = info.workspaces ?? []
  check('ready line: workspaces A (the top-level fields) and B', info.workspaces?.length === 2 && wsA.workspace_id === info.workspace_id && wsA.webhook_secret === info.webhook_secret && wsA.device_ids.join() === devices.join() && wsB.workspace_id !== wsA.workspace_id && wsB.api_key !== wsA.api_key && wsB.webhook_secret !== wsA.webhook_secret && wsB.device_ids.length === 3 && wsB.device_ids.every((d) => !devices.includes(d)), info.workspaces)
  r = await call(seam, 'GET', '/workspaces/get', { key: wsB.api_key })
  check("/workspaces/get with B's key: workspace B", r.status === 200 && r.json.workspace?.workspace_id === wsB.workspace_id && r.json.workspace.organization_id === null, r.json)
  r = await call(seam, 'GET', '/devices/list', { key: wsB.api_key })
  check("/devices/list with B's key: B's devices only", r.status === 200 && r.json.devices.length === 3 && r.json.devices.every((d) => wsB.device_ids.includes(d.device_id)), r.json)
  r = await call(ctl, 'POST', '/codes', { body: { device_id: wsB.device_ids[0], name: 'in B' } })
  const codeB = r.json?.access_code
  check("POST /codes on B's device: the code and its event say workspace B", r.status === 200 && codeB?.workspace_id === wsB.workspace_id && r.json.event?.workspace_id === wsB.workspace_id, r.json)
  r = await call(seam, 'GET', `/access_codes/get?access_code_id=${codeB.access_code_id}`, { key: wsB.api_key })
  check("/access_codes/get of B's code with B's key", r.status === 200 && r.json.access_code.workspace_id === wsB.workspace_id, r.json)
  r = await call(seam, 'GET', `/access_codes/get?access_code_id=${codeB.access_code_id}`, { key })
  check("/access_codes/get of B's code with A's key: 404 (the fake would serve it)", r.status === 404 && r.json?.error?.type === 'not_found', r.json)
  r = await call(ctl, 'POST', '/events', { body: { event_type: 'access_code.set_on_device', access_code_id: codeB.access_code_id } })
  check("POST /events for B's code says workspace B", r.status === 200 && r.json.event.workspace_id === wsB.workspace_id, r.json)
  r = await call(seam, 'POST', '/events/list', { key: wsB.api_key, body: { since } })
  check("/events/list with B's key: B's events only", r.status === 200 && r.json.events.length === 2 && r.json.events.every((e) => e.workspace_id === wsB.workspace_id), r.json)
  r = await call(seam, 'POST', '/events/list', { key, body: { since } })
  check("/events/list with A's key: none of B's", r.status === 200 && r.json.events.length >= 2 && r.json.events.every((e) => e.workspace_id === wsA.workspace_id), r.json)
  r = await call(ctl, 'GET', '/credentials')
  const used = r.json
  check('GET /credentials: per route', used?.by_route?.['GET /access_codes/get']?.[wsB.api_key] >= 1 && used.by_route['POST /events/list'][wsB.api_key] === 1, used?.by_route)
  check('GET /credentials: per access code', used?.by_access_code?.[codeB.access_code_id]?.[wsB.api_key] === 1 && used.by_access_code[codeB.access_code_id][key] === 1, used?.by_access_code?.[codeB.access_code_id])
  check('GET /credentials: each call', used?.calls?.some((c) => c.route === 'GET /access_codes/get' && c.credential === wsB.api_key && c.access_code_ids[0] === codeB.access_code_id && c.status === 200), used?.calls)
  r = await call(ctl, 'POST', '/api_keys/rotate', { body: { workspace_id: wsB.workspace_id } })
  check("POST /api_keys/rotate {workspace_id: B} rotates B's key", r.status === 200 && r.json.old_key === wsB.api_key && r.json.workspace_id === wsB.workspace_id, r.json)
  const newB = r.json.new_key
  r = await call(seam, 'GET', '/workspaces/get', { key: wsB.api_key })
  check("B's old key -> 401", r.status === 401, r.json)
  r = await call(seam, 'GET', '/workspaces/get', { key: newB })
  check("B's new key reaches B", r.json?.workspace?.workspace_id === wsB.workspace_id, r.json)
  r = await call(seam, 'GET', '/devices/list', { key })
  check("A's key still works", r.status === 200, r.json)
  r = await call(ctl, 'POST', '/codes', { body: { device_id: wsB.device_ids[1] } })
  check("the control API uses B's new key for B", r.status === 200 && r.json.access_code.workspace_id === wsB.workspace_id, r.json)
  r = await call(ctl, 'POST', '/api_keys', { body: { token: wsB.api_key, workspace_id: wsB.workspace_id } })
  r = await call(seam, 'GET', '/workspaces/get', { key: wsB.api_key })
  check("POST /api_keys {workspace_id: B} puts B's old key back", r.json?.workspace?.workspace_id === wsB.workspace_id, r.json)
  r = await call(ctl, 'POST', '/workspaces', { body: { name: 'Smoke C', devices: 1 } })
  const wsC = r.json?.workspace
  check('POST /workspaces adds one', r.status === 200 && wsC?.name === 'Smoke C' && wsC.device_ids.length === 1 && wsC.api_key.startsWith('seam_') && wsC.webhook_secret.startsWith('whsec_'), r.json)
  r = await call(seam, 'GET', '/workspaces/get', { key: wsC.api_key })
  check("its key reaches it", r.json?.workspace?.workspace_id === wsC.workspace_id, r.json)
  r = await call(ctl, 'GET', '/workspaces')
  check('GET /workspaces lists A, B, C', r.json?.workspaces?.length === 3 && r.json.workspaces[2].workspace_id === wsC.workspace_id, r.json)
  r = await call(ctl, 'POST', '/api_keys/rotate', { body: { workspace_id: 'nope' } })
  check('an unknown workspace_id -> 404', r.status === 404, r.json)

  // The pull of a backup access code: the fake's answer completed (access_code, type,
  // pending_mutations), the same backup again, ongoing codes refused, other workspaces' 404.
  r = await call(ctl, 'POST', '/codes', { body: { device_id: devices[2], name: 'pull', starts_at: startsAt, ends_at: endsAt } })
  const pullFor = r.json?.access_code?.access_code_id
  r = await call(seam, 'POST', '/access_codes/pull_backup_access_code', { key, body: { access_code_id: pullFor } })
  const pulled = r.json?.backup_access_code
  check('pull_backup_access_code answers the original and its backup', r.status === 200 && r.json.ok === true && r.json.access_code?.pulled_backup_access_code_id === pulled?.access_code_id && pulled?.is_backup === true && pulled.type === 'time_bound' && Array.isArray(pulled.pending_mutations), r.json)
  r = await call(seam, 'GET', `/access_codes/get?access_code_id=${pulled?.access_code_id}`, { key })
  check('the backup is time_bound on get too', r.status === 200 && r.json.access_code.type === 'time_bound', r.json)
  r = await call(seam, 'POST', '/access_codes/pull_backup_access_code', { key, body: { access_code_id: pullFor } })
  check('a second pull answers the same backup', r.status === 200 && r.json.backup_access_code?.access_code_id === pulled?.access_code_id, r.json)
  r = await call(ctl, 'POST', '/codes', { body: { device_id: devices[2], name: 'ongoing' } })
  r = await call(seam, 'POST', '/access_codes/pull_backup_access_code', { key, body: { access_code_id: r.json?.access_code?.access_code_id } })
  check('an ongoing code -> 400 access_code_not_time_bound', r.status === 400 && r.json?.error?.type === 'access_code_not_time_bound', r.json)
  r = await call(seam, 'POST', '/access_codes/pull_backup_access_code', { key: newB, body: { access_code_id: pullFor } })
  check("another workspace's key -> 404", r.status === 404 && r.json?.error?.type === 'access_code_not_found', r.json)

  // POST /hold: the next call is answered by the fake at once, its answer held back.
  r = await call(ctl, 'POST', '/hold', { body: { route: 'GET /devices/list', ms: 300 } })
  check('POST /hold arms one', r.status === 200 && r.json?.hold?.armed === 1, r.json)
  const heldFrom = Date.now()
  const held = call(seam, 'GET', '/devices/list', { key })
  await new Promise((resolve) => setTimeout(resolve, 100))
  r = await call(ctl, 'GET', '/holds')
  check('GET /holds shows it held', r.json?.holds?.['GET /devices/list']?.holding === 1, r.json)
  r = await held
  check('the held answer comes after ms', r.status === 200 && Date.now() - heldFrom >= 290, Date.now() - heldFrom)

  r = await call(ctl, 'GET', '/contract/violations')
  check('contract report: the fixed answers break nothing', r.json?.violation_count === 0, r.json?.violations)

  // ... and what the document refuses is flagged.
  r = await call(seam, 'POST', '/events/list', { key, body: { since, event_types: ['access_code.made_up'], made_up_filter: 1 } })
  check('the front still answers a refused request', r.status === 200, r.json)
  r = await call(ctl, 'GET', '/contract/violations')
  const flagged = (r.json?.violations ?? []).map((v) => v.text).join('\n')
  check('an event_types value outside the enum is flagged', /POST \/events\/list: body\/event_types\/0: must be equal to one of the allowed values/.test(flagged), r.json)
  check('an unknown parameter is flagged', flagged.includes("unknown body parameter 'made_up_filter'") && r.json.violation_count === 2, r.json)
  check('a violation names its request', r.json?.violations?.[0]?.request === 'POST /events/list', r.json?.violations)
  r = await call(ctl, 'DELETE', '/contract/violations')
  r = await call(ctl, 'GET', '/contract/violations')
  check('DELETE /contract/violations forgets them', r.json?.violation_count === 0 && r.json.requests_checked === 0, r.json)

  r = await call(ctl, 'GET', '/nope')
  check('unknown route -> 404 JSON', r.status === 404 && r.json?.error, r.json)
  r = await fetch(`${ctl}/codes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{not json' })
  check('bad JSON -> 400', r.status === 400)

  check('nothing else on stdout', h.extra.length === 0, h.extra)

  // --- lifecycle
  h.child.kill('SIGTERM')
  let exit = await withTimeout(h.exited, 5000)
  check('exits on SIGTERM', exit !== 'timeout' && exit.code === 0, exit)

  const h2 = startHarness()
  await h2.ready
  h2.child.stdin.end()
  exit = await withTimeout(h2.exited, 5000)
  check('exits when stdin closes', exit !== 'timeout' && exit.code === 0, exit)
  if (exit === 'timeout') h2.child.kill('SIGKILL')

  const h3 = startHarness()
  await h3.ready
  h3.child.kill('SIGINT')
  exit = await withTimeout(h3.exited, 5000)
  check('exits on SIGINT', exit !== 'timeout' && exit.code === 0, exit)
}

try {
  await main()
} catch (err) {
  failed++
  console.log(`FAIL smoke aborted: ${err.stack ?? err}`)
}
console.log(`smoke: ${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)

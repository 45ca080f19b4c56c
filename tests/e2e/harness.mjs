#!/usr/bin/env node
// E2E harness: Seam's official fake server (@seamapi/fake-seam-connect) in-process,
// behind a front (front.mjs) that checks every request and answer against Seam's own
// OpenAPI document (contract.mjs) and fixes the fake's answers where they disagree with
// it, plus a small JSON control API for what the fake cannot do by itself (change a
// code's status/warnings/errors, record events, sign and deliver webhooks like Svix,
// verify with Seam's own webhook SDK, rotate API keys, report contract violations). See
// README.md beside this file.
//
// stdout carries exactly ONE line of JSON (the connection info); everything else goes
// to stderr. The process exits on SIGTERM/SIGINT and when its stdin closes.

import { randomBytes, randomInt, randomUUID } from 'node:crypto'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'

// Keep the real stdout for the single ready line and send every other write (console.log
// from the fake's logger or its dependencies included) to stderr.
const writeReadyLine = process.stdout.write.bind(process.stdout)
process.stdout.write = process.stderr.write.bind(process.stderr)

const { createFake } = await import('@seamapi/fake-seam-connect')
const { Webhook } = await import('svix')
const { SeamWebhook } = await import('@seamapi/webhook')
const { startFront, managedCode, unmanagedCode, settleUnmanaged } = await import('./front.mjs')
const { eventSchema } = await import('./contract.mjs')

const log = (...args) => console.error('[e2e-harness]', ...args)
const HOST = '127.0.0.1'

// ---------------------------------------------------------------- fake + seed data

const fake = await createFake()
const db = fake.database // a zustand store: methods and state fields live on it directly

// Quirk: the fake numbers ids per store (`access_code1`, `event1`, ...); Seam's document
// says uuid (`format: uuid`) for every id the service reads. Ids of these kinds are uuids.
const UUID_IDS = new Set(['access_code', 'event', 'device', 'connected_account', 'workspace', 'action_attempt', 'noise_threshold'])
const counterId = db.getState()._getNextId
db.setState({ _getNextId: (type) => (UUID_IDS.has(type) ? randomUUID() : counterId(type)) })

// Workspaces: each with its own API key, `august` connected account, `august_lock`
// devices and webhook secret. The first (A) is the one of the ready line's top-level
// fields; B is seeded too; `POST /workspaces` adds more. The fake keeps several
// workspaces but scopes little by workspace (see README.md): the front and the
// control routes below make up for it.
const workspaces = [] // {name, workspace_id, api_key, device_ids, connected_account_id, webhook_secret}
const workspaceOf = (id) => workspaces.find((w) => w.workspace_id === id)

// Tokens must start with `seam_` (and not `seam_cst`/`seam_at`); the fake takes the part
// after the first `_` as the short token. One counter for every workspace: unique keys.
let keyCounter = 0
const newKey = () => `seam_e2e_key_${++keyCounter}`

function seedWorkspace({ name, devices = 3 }) {
  const workspace_id = randomUUID()
  db.addWorkspace({ name, workspace_id, is_sandbox: true })
  // Quirk: the fake's addWorkspace drops `organization_id`, which the document's
  // `workspace` requires (nullable): a workspace of no organization says null.
  db.setState({ workspaces: db.workspaces.map((w) => ({ organization_id: null, ...w })) })
  const api_key = newKey()
  db.addApiKey({ name: `E2E API Key ${keyCounter}`, token: api_key, workspace_id })
  const connected_account_id = randomUUID()
  db.addConnectedAccount({
    provider: 'august',
    workspace_id,
    connected_account_id,
    user_identifier: { email: `e2e+${workspaces.length + 1}@example.com` },
  })
  // Same shape as the fake's own `--seed` locks (august_lock, can_program_online_access_codes).
  const device_ids = Array.from({ length: devices }, (_, i) => {
    const lock = `${name} Lock ${i + 1}`
    const device = db.addDevice({
      device_id: randomUUID(),
      device_type: 'august_lock',
      name: lock,
      connected_account_id,
      workspace_id,
      can_remotely_lock: true,
      can_remotely_unlock: true,
      can_program_online_access_codes: true,
      properties: { name: lock, manufacturer: 'august', locked: true },
    })
    return device.device_id
  })
  const webhook_secret = `whsec_${randomBytes(32).toString('base64')}`
  const workspace = { name, workspace_id, api_key, device_ids, connected_account_id, webhook_secret }
  workspaces.push(workspace)
  return workspace
}

const first = seedWorkspace({ name: 'E2E Workspace' })
seedWorkspace({ name: 'E2E Workspace B' })
const workspaceId = first.workspace_id
const deviceIds = first.device_ids
const webhookSecret = first.webhook_secret

// The fake's startServer calls `server.listen(port)`, which binds all interfaces, and it
// reports `http://localhost:PORT`. Force 127.0.0.1 by wrapping net.Server#listen while it
// starts. The port must be known beforehand (the fake bakes it into its base URL), so
// probe a free one and retry if someone grabs it in between.
async function freePort() {
  const probe = net.createServer()
  await new Promise((resolve, reject) => {
    probe.once('error', reject)
    probe.listen(0, HOST, resolve)
  })
  const { port } = probe.address()
  await new Promise((resolve) => probe.close(resolve))
  return port
}

async function startFake() {
  const originalListen = net.Server.prototype.listen
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    net.Server.prototype.listen = function (_port, ...rest) {
      const callback = rest.find((arg) => typeof arg === 'function')
      return originalListen.call(this, { port, host: HOST }, callback)
    }
    try {
      await fake.startServer({ port, baseUrl: `http://${HOST}:${port}` })
      return { url: `http://${HOST}:${port}`, server: fake.server.server }
    } catch (err) {
      if (err?.code !== 'EADDRINUSE' || attempt >= 5) throw err
      log(`port ${port} taken, retrying`)
    } finally {
      net.Server.prototype.listen = originalListen
    }
  }
}

const { url: fakeUrl, server: fakeServer } = await startFake()
// What the service is given as the Seam API: the validating front.
const front = await startFront({ db, fakeUrl, host: HOST, log })
const seamApiUrl = front.url

// ---------------------------------------------------------------- helpers

class HttpError extends Error {
  constructor(status, message, extra = {}) {
    super(message)
    this.status = status
    this.extra = extra
  }
}

// Call the fake's real HTTP API with the current API key of `workspace` (default: A)
// (directly: the harness's own calls are not the service's, and are not counted by the
// contract check).
async function seamApi(path, body, workspace = first) {
  const res = await fetch(`${fakeUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${workspace.api_key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const json = await res.json().catch(() => null)
  if (!res.ok) {
    const { stack: _stack, ...seamError } = json?.error ?? {} // the fake adds a stack trace
    throw new HttpError(res.status, seamError.message ?? `fake answered ${res.status}`, { seam_error: seamError })
  }
  return json
}

const findCode = (id) => db.access_codes.find((c) => c.access_code_id === id)
const findDevice = (id) => db.devices.find((d) => d.device_id === id)
// The workspace a device (or a code, by its device) belongs to: its calls use that
// workspace's key. The fake stamps a new code with the CALLER's workspace
// (`req.auth.workspace_id`) and never checks the device's, so a code made on B's lock with
// A's key would say workspace A; made with B's key it says B, as Seam does.
const workspaceOfDevice = (id) => workspaceOf(findDevice(id)?.workspace_id) ?? first
const workspaceParam = (value) => {
  if (value == null) return first
  const workspace = workspaceOf(value)
  if (workspace == null) throw new HttpError(404, `no workspace ${value}`)
  return workspace
}

// Codes we have seen, so events can still be filled in after a code was deleted.
const knownCodes = new Map()
const remember = (code) => (code != null && knownCodes.set(code.access_code_id, code), code)

function signHeaders({ payload, msgId, timestamp, secret }) {
  const signature = new Webhook(secret).sign(msgId, new Date(timestamp * 1000), payload)
  return {
    'svix-id': msgId,
    'svix-timestamp': String(timestamp),
    'svix-signature': signature,
  }
}

// POST raw bytes with node:http rather than fetch: fetch refuses the "bad ports" of the
// Fetch spec (6000, 6665-6669, 10080, ...) and would reject a receiver that happens to
// listen there.
function postRaw(url, headers, body) {
  const target = new URL(url)
  const client = target.protocol === 'https:' ? https : http
  return new Promise((resolve, reject) => {
    const req = client.request(target, { method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.setTimeout(15_000, () => req.destroy(new Error('no answer within 15 s'))) // Svix gives up about then
    req.on('error', reject)
    req.end(body)
  })
}

const newMsgId = () => `msg_${randomBytes(16).toString('hex')}`
const nowSeconds = () => Math.floor(Date.now() / 1000)
const requireString = (value, name) => {
  if (typeof value !== 'string' || value === '') throw new HttpError(400, `${name} is required`)
  return value
}

// ---------------------------------------------------------------- control routes

const routes = {
  'GET /health': async () => ({ ok: true }),

  // Through the fake's real API: validation, 409 on duplicate PIN, `access_code.created`.
  'POST /codes': async ({ body }) => {
    const params = { device_id: requireString(body.device_id, 'device_id') }
    for (const key of ['name', 'code', 'starts_at', 'ends_at']) {
      if (body[key] != null) params[key] = body[key]
    }
    const { access_code } = await seamApi('/access_codes/create', params, workspaceOfDevice(params.device_id))
    // The `access_code.created` event the fake just recorded (not delivered: /deliver it).
    const event = db.events.findLast(
      (e) => e.event_type === 'access_code.created' && e.access_code_id === access_code.access_code_id,
    )
    return { access_code: remember(access_code), event: event ?? null }
  },

  // The fake never changes a code by itself and has no route for it: patch the store.
  // `status`, `warnings`, `errors` and any other field given are merged into the code.
  'POST /codes/:id/state': async ({ id, body }) => {
    if (findCode(id) == null) throw new HttpError(404, `no access code ${id}`)
    const { access_code_id: _ignored, ...patch } = body
    const updated = remember(db.updateAccessCode({ ...patch, access_code_id: id }))
    const { access_code } = await seamApi('/access_codes/get', { access_code_id: id }, workspaceOfDevice(updated.device_id))
    return { access_code: access_code.is_managed === false ? unmanagedCode(access_code) : managedCode(access_code) }
  },

  // An unmanaged code on the device (one Seam found on the lock, not made through it):
  // through the fake's `/access_codes/simulate/create_unmanaged_access_code`, then `set`.
  'POST /unmanaged_codes': async ({ body }) => {
    const params = { device_id: requireString(body.device_id, 'device_id'), name: body.name ?? 'Unmanaged code' }
    params.code = body.code ?? String(randomInt(1000, 10_000))
    const { access_code } = await seamApi('/access_codes/simulate/create_unmanaged_access_code', params, workspaceOfDevice(params.device_id))
    return { access_code: unmanagedCode(remember(settleUnmanaged(db, access_code))) }
  },

  // What the contract check found in the service's Seam calls so far: violations in full,
  // the count of requests checked, per route the requests, statuses and violations, and
  // notes (what the document cannot judge, e.g. an undocumented 404) with their counts.
  'GET /contract/violations': async () => front.report(),
  'DELETE /contract/violations': async () => (front.reset(), { ok: true }),

  // Like Seam after a code is removed from its lock: `/access_codes/get` answers 404.
  'DELETE /codes/:id': async ({ id }) => {
    if (findCode(id) == null) throw new HttpError(404, `no access code ${id}`)
    remember(findCode(id))
    db.deleteAccessCode(id)
    return { ok: true }
  },

  // Records a flat event in the fake (so `/events/list` serves it) and returns it.
  'POST /events': async ({ body }) => {
    const { event_type, access_code_id, ...extra } = body
    requireString(event_type, 'event_type')
    const code = access_code_id != null ? (findCode(access_code_id) ?? knownCodes.get(access_code_id)) : null
    if (access_code_id != null && code == null && extra.device_id == null) {
      throw new HttpError(404, `no access code ${access_code_id} (pass device_id to force)`)
    }
    const deviceId = extra.device_id ?? code?.device_id
    const device = deviceId != null ? findDevice(deviceId) : null
    const event = {
      event_id: randomUUID(), // the live API uses uuids; the fake would say `eventN`
      event_type,
      // The code's workspace (else its device's, else A): the fake's own events say the
      // caller's workspace, which is the code's when the harness made it with its key.
      workspace_id: code?.workspace_id ?? (device != null ? device.workspace_id : workspaceId),
      ...(deviceId != null && { device_id: deviceId }),
      ...(device != null && { connected_account_id: device.connected_account_id }),
      ...(access_code_id != null && { access_code_id }),
      // Seam puts the PIN on these three event types.
      ...(code != null &&
        ['access_code.set_on_device', 'access_code.scheduled_on_device', 'access_code.deleted'].includes(event_type) && {
          code: code.code ?? null,
        }),
      ...extra,
    }
    // Seam sends every list its document requires for the type (e.g. the six
    // `*_errors`/`*_warnings` of `delay_in_setting_on_device`), empty when there is nothing.
    const schema = eventSchema(event_type)
    for (const name of schema?.required ?? []) {
      if (event[name] === undefined && schema.properties[name]?.type === 'array') event[name] = []
    }
    return { event: db.addEvent(event) } // adds created_at, occurred_at, event_description
  },

  'POST /deliver': async ({ body }) => {
    const url = requireString(body.url, 'url')
    if (body.event == null) throw new HttpError(400, 'event is required')
    // A string is sent as-is (raw bytes tests); anything else is JSON.stringify'd.
    const payload = typeof body.event === 'string' ? body.event : JSON.stringify(body.event)
    const msgId = body.msg_id ?? newMsgId()
    const timestamp = body.timestamp ?? nowSeconds()
    const headers = signHeaders({ payload, msgId, timestamp, secret: body.secret ?? webhookSecret })
    let res
    try {
      res = await postRaw(url, { ...headers, 'content-type': 'application/json' }, payload)
    } catch (err) {
      throw new HttpError(502, `delivery to ${url} failed: ${err.message}`, { msg_id: msgId })
    }
    return { status: res.status, body: res.body, msg_id: msgId, headers }
  },

  'POST /sign': async ({ body }) => {
    if (typeof body.payload !== 'string') throw new HttpError(400, 'payload must be a string')
    const headers = signHeaders({
      payload: body.payload,
      msgId: body.msg_id ?? newMsgId(),
      timestamp: body.timestamp ?? nowSeconds(),
      secret: body.secret ?? webhookSecret,
    })
    return { headers }
  },

  // Seam's own SDK as the oracle (it rejects timestamps more than 5 min from now).
  'POST /verify': async ({ body }) => {
    if (typeof body.payload !== 'string') throw new HttpError(400, 'payload must be a string')
    try {
      const event = new SeamWebhook(body.secret ?? webhookSecret).verify(body.payload, body.headers ?? {})
      return { ok: true, event }
    } catch (err) {
      return { ok: false, error: err.message }
    }
  },

  // The fake has no way to delete an API key: drop it from the store's `api_keys` array.
  // `workspace_id` (default A) names whose key; the control API uses the new one.
  'POST /api_keys/rotate': async ({ body }) => {
    const workspace = workspaceParam(body.workspace_id)
    const oldKey = workspace.api_key
    workspace.api_key = newKey()
    db.setState({ api_keys: db.api_keys.filter((k) => k.token !== oldKey) })
    db.addApiKey({ name: `E2E API Key ${keyCounter}`, token: workspace.api_key, workspace_id: workspace.workspace_id })
    return { old_key: oldKey, new_key: workspace.api_key, workspace_id: workspace.workspace_id }
  },

  // Adds an API key of `workspace_id` (default A) to the fake (a given `token`, e.g. one
  // `/api_keys/rotate` removed, or a fresh one): how a test "fixes" a rejected key without
  // restarting the service. The control API keeps using its current key.
  'POST /api_keys': async ({ body }) => {
    const workspace = workspaceParam(body.workspace_id)
    const token = body.token ?? newKey()
    if (typeof token !== 'string' || !/^seam_[A-Za-z0-9]+_/.test(token) || /^seam_(cst|at)/.test(token)) {
      throw new HttpError(400, 'token must look like seam_<short>_<rest> (not seam_cst/seam_at)')
    }
    if (db.api_keys.some((k) => k.token === token)) throw new HttpError(409, 'that API key already exists')
    db.addApiKey({ name: `E2E API Key (${token})`, token, workspace_id: workspace.workspace_id })
    return { token, workspace_id: workspace.workspace_id }
  },

  // Another workspace: its own key, connected account, `devices` locks (default 3) and
  // webhook secret; answered as the ready line's `workspaces` entries are.
  'POST /workspaces': async ({ body }) => {
    const devices = body.devices ?? 3
    if (!Number.isInteger(devices) || devices < 1 || devices > 20) throw new HttpError(400, 'devices must be 1..20')
    const name = body.name ?? `E2E Workspace ${String.fromCharCode(65 + workspaces.length)}`
    return { workspace: publicWorkspace(seedWorkspace({ name, devices })) }
  },
  'GET /workspaces': async () => ({ workspaces: workspaces.map(publicWorkspace) }),

  // Holds back the answers to the next `count` (default 1) calls of `route` (e.g.
  // `POST /access_codes/pull_backup_access_code`) for `ms`: each is forwarded to the fake
  // and answered by it at once (Seam has acted), the caller waits. `GET /holds` says how
  // many are armed, being held, held.
  'POST /hold': async ({ body }) => {
    const route = requireString(body.route, 'route')
    const ms = body.ms
    const count = body.count ?? 1
    if (!Number.isInteger(ms) || ms < 0 || ms > 600_000) throw new HttpError(400, 'ms must be 0..600000')
    if (!Number.isInteger(count) || count < 0) throw new HttpError(400, 'count must be a whole number')
    return { hold: front.hold(route, ms, count) }
  },
  'GET /holds': async () => ({ holds: front.holds() }),

  // Which credential (bearer token) each Seam call through the front used: every call
  // `{route, access_code_id, credential, status}`, and counts per route and per code.
  'GET /credentials': async () => front.credentials(),
}

// A workspace as the ready line and the control API show it (a copy: keys rotate).
const publicWorkspace = (w) => ({ ...w, device_ids: [...w.device_ids] })

function route(method, pathname) {
  const codeState = pathname.match(/^\/codes\/([^/]+)\/state$/)
  if (codeState) return { handler: routes[`${method} /codes/:id/state`], id: decodeURIComponent(codeState[1]) }
  const code = pathname.match(/^\/codes\/([^/]+)$/)
  if (code) return { handler: routes[`${method} /codes/:id`], id: decodeURIComponent(code[1]) }
  return { handler: routes[`${method} ${pathname}`] }
}

async function readJson(req) {
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  const text = Buffer.concat(chunks).toString('utf8')
  if (text.trim() === '') return {}
  try {
    const body = JSON.parse(text)
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('not an object')
    return body
  } catch (err) {
    throw new HttpError(400, `body must be a JSON object: ${err.message}`)
  }
}

const control = http.createServer(async (req, res) => {
  let status = 200
  let out
  try {
    const { pathname } = new URL(req.url, 'http://control')
    const { handler, id } = route(req.method, pathname)
    if (handler == null) throw new HttpError(404, `no route ${req.method} ${pathname}`)
    out = await handler({ id, body: await readJson(req) })
  } catch (err) {
    status = err instanceof HttpError ? err.status : 500
    if (!(err instanceof HttpError)) log(`${req.method} ${req.url} failed:`, err)
    out = { error: err.message, ...err.extra }
  }
  const text = JSON.stringify(out)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
})
await new Promise((resolve, reject) => {
  control.once('error', reject)
  control.listen(0, HOST, resolve)
})
const controlUrl = `http://${HOST}:${control.address().port}`

// ---------------------------------------------------------------- lifecycle

let stopping = false
function shutdown(reason) {
  if (stopping) return
  stopping = true
  log(`stopping (${reason})`)
  control.close()
  front.close()
  fakeServer.close()
  control.closeAllConnections?.()
  fakeServer.closeAllConnections?.()
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
// A parent test that dies closes our stdin: go with it. (Opt out for manual runs with
// stdin at /dev/null: E2E_HARNESS_IGNORE_STDIN=1.)
if (process.env.E2E_HARNESS_IGNORE_STDIN !== '1') {
  process.stdin.on('end', () => shutdown('stdin closed'))
  process.stdin.on('error', () => shutdown('stdin error'))
  process.stdin.resume()
}
process.on('unhandledRejection', (err) => log('unhandled rejection:', err))

writeReadyLine(
  JSON.stringify({
    seam_api_url: seamApiUrl,
    api_key: first.api_key,
    device_ids: deviceIds,
    workspace_id: workspaceId,
    control_url: controlUrl,
    webhook_secret: webhookSecret,
    workspaces: workspaces.map(publicWorkspace),
  }) + '\n',
)
log(`ready: Seam API (the checking front) at ${seamApiUrl}, the fake at ${fakeUrl}, control at ${controlUrl}`)

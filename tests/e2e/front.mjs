// The "Seam API" the service talks to in the e2e tests: a small HTTP front for Seam's
// official fake. Every request is checked against Seam's OpenAPI document
// (contract.mjs: checkRequest) before it is answered, and every answer is checked too
// (checkResponse). Where the fake disagrees with the document, the answer is fixed here,
// in front of the fake (README.md: "Where the fake disagrees with Seam's document"): the
// document wins, the check is never loosened.

import { Buffer } from 'node:buffer'
import http from 'node:http'

import { checkRequest, checkResponse, format, requestParams } from './contract.mjs'

const MAX_KEPT = 200 // violations kept in full (all are counted)
const MAX_CALLS_KEPT = 5000 // calls kept in the credential record (all are counted)

// ---------------------------------------------------------------- shapes

// Seam's error envelope.
const seamError = (status, type, message) => ({ status, json: { error: { type, message }, ok: false } })

// An access code as the document's `access_code`: the fake never sets `pending_mutations`
// (required; an empty list when nothing is pending).
export const managedCode = (code) => ({ pending_mutations: [], ...code })

// An unmanaged code as the document's `unmanaged_access_code`: its documented fields only
// (the fake's record also carries managed-only flags).
const UNMANAGED_FIELDS = [
  'access_code_id', 'code', 'created_at', 'device_id', 'dormakaba_oracode_metadata', 'ends_at', 'errors',
  'is_managed', 'name', 'starts_at', 'status', 'type', 'warnings', 'workspace_id',
]
export const unmanagedCode = (code) =>
  Object.fromEntries(UNMANAGED_FIELDS.filter((k) => k in code).map((k) => [k, code[k]]))

const byCreation = (a, b) =>
  String(a.created_at).localeCompare(String(b.created_at)) || String(a.access_code_id).localeCompare(String(b.access_code_id))

// ---------------------------------------------------------------- the front

export async function startFront({ db, fakeUrl, host, log }) {
  const fake = new URL(fakeUrl)
  const agent = new http.Agent({ keepAlive: true })
  let frontUrl // known once listening

  // What the contract found: every request and answer through the front.
  const report = { requests_checked: 0, violations: [], violation_count: 0, notes: new Map(), by_route: {} }
  function record(route, request, findings) {
    const entry = (report.by_route[route] ??= { requests: 0, statuses: {}, violations: 0 })
    for (const f of findings) {
      if (f.level === 'violation') {
        entry.violations++
        report.violation_count++
        if (report.violations.length < MAX_KEPT) report.violations.push({ ...f, request, text: format(f) })
        log(`contract ${format(f)} (${request})`)
      } else {
        const key = format(f)
        const seen = report.notes.get(key) ?? { ...f, text: key, count: 0 }
        seen.count++
        report.notes.set(key, seen)
      }
    }
    return entry
  }

  // Which credential each call used: the bearer token (and `seam-workspace`, sent with a
  // personal access token), per call, per route and per access code named in the call.
  const credentials = { calls: [], by_route: {}, by_access_code: {} }
  function recordCredential(route, ctx, status) {
    const credential = /^Bearer (.*)$/i.exec(ctx.headers.authorization ?? '')?.[1] ?? null
    const workspace = ctx.headers['seam-workspace'] ?? null
    const ids = [ctx.params.access_code_id, ...[ctx.params.access_code_ids ?? []].flat()].filter((id) => typeof id === 'string')
    const key = credential ?? '(none)'
    const perRoute = (credentials.by_route[route] ??= {})
    perRoute[key] = (perRoute[key] ?? 0) + 1
    for (const id of new Set(ids)) {
      const perCode = (credentials.by_access_code[id] ??= {})
      perCode[key] = (perCode[key] ?? 0) + 1
    }
    if (credentials.calls.length < MAX_CALLS_KEPT) {
      credentials.calls.push({ route, access_code_ids: [...new Set(ids)], credential, ...(workspace && { seam_workspace: workspace }), status })
    }
  }

  // Sends a request on to the fake as it came (minus hop-by-hop headers and compression).
  function forward(method, pathAndQuery, headers, body) {
    const out = { ...headers }
    for (const h of ['host', 'connection', 'content-length', 'transfer-encoding', 'accept-encoding', 'keep-alive']) delete out[h]
    if (body.length > 0) out['content-length'] = String(body.length)
    return new Promise((resolve, reject) => {
      const req = http.request(new URL(pathAndQuery, fake), { method, headers: out, agent }, (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let json
          try {
            json = JSON.parse(text)
          } catch {}
          resolve({ status: res.statusCode, headers: res.headers, text, json })
        })
        res.on('error', reject)
      })
      req.on('error', reject)
      req.end(body)
    })
  }

  // The fake's authentication, as for its other routes: its `/devices/list` (limit 1)
  // with the caller's headers (its `/workspaces/get` answers an unknown key differently,
  // see that route). Returns `{workspace_id}` or `{answer}` (the fake's 401 and friends).
  async function auth(ctx) {
    const answer = await forward('GET', '/devices/list?limit=1', ctx.headers, Buffer.alloc(0))
    if (answer.status !== 200) return { answer }
    const workspaces = await forward('GET', '/workspaces/get', ctx.headers, Buffer.alloc(0))
    return { workspace_id: workspaces.json?.workspace?.workspace_id }
  }

  // A JSON POST to the fake with the caller's headers.
  const forwardJson = (ctx, path, params) =>
    forward('POST', path, { ...ctx.headers, 'content-type': 'application/json' }, Buffer.from(JSON.stringify(params)))

  // `pagination` and the page for `items` (already filtered and ordered), per the
  // document: `limit`, `page_cursor` (opaque: base64url of {offset, query}; a cursor is
  // valid only with the same other parameters, as Seam says), `next_page_url` on the front.
  function paginate(ctx, items, defaultLimit) {
    const { page_cursor, limit: rawLimit, ...rest } = ctx.params
    const query = JSON.stringify(Object.entries(rest).sort(([a], [b]) => a.localeCompare(b)))
    const limit = rawLimit == null ? defaultLimit : Math.floor(Number(rawLimit))
    if (!(limit >= 1)) return { error: seamError(400, 'invalid_input', 'limit must be a positive number') }
    let offset = 0
    if (page_cursor != null) {
      let cursor
      try {
        cursor = JSON.parse(Buffer.from(String(page_cursor), 'base64url').toString('utf8'))
      } catch {}
      if (!Number.isInteger(cursor?.offset) || cursor.offset < 0) return { error: seamError(400, 'invalid_input', 'page_cursor is not a cursor this API gave') }
      if (cursor.query !== query) {
        return { error: seamError(400, 'mismatched_page_parameters', 'When using next_page_cursor, the request must send parameters identical to the initial request.') }
      }
      offset = cursor.offset
    }
    const page = items.slice(offset, offset + limit)
    const has_next_page = offset + limit < items.length
    const next_page_cursor = has_next_page ? Buffer.from(JSON.stringify({ offset: offset + limit, query })).toString('base64url') : null
    let next_page_url = null
    if (has_next_page) {
      const url = new URL(ctx.path, frontUrl)
      for (const [name, value] of Object.entries({ ...rest, ...(rawLimit != null && { limit: rawLimit }) })) {
        for (const v of [value].flat()) url.searchParams.append(name, typeof v === 'string' ? v : JSON.stringify(v))
      }
      url.searchParams.set('page_cursor', next_page_cursor)
      next_page_url = url.toString()
    }
    return { page, pagination: { next_page_cursor, has_next_page, next_page_url } }
  }

  // Answers held back (`POST /hold` of the control API): the request is forwarded and
  // answered by the fake at once (so Seam has acted), its answer to the caller waits
  // `ms`. Per route (`POST /access_codes/pull_backup_access_code`): armed, holding, held.
  const holds = {}
  const holdArmed = (route) => (holds[route]?.armed ?? 0) > 0

  const inWorkspace = (workspace_id) => (code) => code.workspace_id == null || code.workspace_id === workspace_id

  // Routes the harness answers, or whose answer it fixes. Each gets `ctx` ({method, path,
  // search, params, headers, body, forward()}) and returns `{status, json}` or the fake's
  // answer. The default is the fake's answer untouched.
  const routes = {
    // The fake serves unmanaged codes here too; the document's `access_code` is managed
    // only (`is_managed: [true]`), Seam serves those on /access_codes/unmanaged/get and
    // answers 404 here. And it never sets `pending_mutations`.
    '/access_codes/get': async (ctx) => {
      const { access_code_id, device_id, code } = ctx.params
      const stored = db.access_codes.find((c) => c.access_code_id === access_code_id || (c.device_id === device_id && c.code === code))
      if (stored?.is_managed === false) {
        const { answer } = await auth(ctx)
        return answer ?? seamError(404, 'not_found', 'Access Code Not Found')
      }
      const answer = await ctx.forward()
      if (answer.status === 200 && answer.json?.access_code) {
        // The fake serves any key any workspace's code; Seam answers 404 for a code of
        // another workspace than the credential's.
        const { answer: refused, workspace_id } = await auth(ctx)
        if (refused) return refused
        if (!inWorkspace(workspace_id)(answer.json.access_code)) return seamError(404, 'not_found', 'Access Code Not Found')
        return { status: 200, json: { ...answer.json, access_code: managedCode(answer.json.access_code) } }
      }
      return answer
    },

    // Not in the fake at all. From the fake's own store: the unmanaged code (by
    // `access_code_id`, or `device_id` + `code`) of the caller's workspace, or Seam's 404.
    '/access_codes/unmanaged/get': async (ctx) => {
      const { answer, workspace_id } = await auth(ctx)
      if (answer) return answer
      const { access_code_id, device_id, code } = ctx.params
      if (access_code_id == null && (device_id == null || code == null)) {
        return seamError(400, 'invalid_input', 'Either "access_code_id" OR "code" and "device_id" must be provided')
      }
      const found = db.access_codes.find(
        (c) =>
          c.is_managed === false &&
          inWorkspace(workspace_id)(c) &&
          (access_code_id != null ? c.access_code_id === access_code_id : c.device_id === device_id && c.code === code),
      )
      if (found == null) return seamError(404, 'not_found', 'Unmanaged access code not found')
      return { status: 200, json: { access_code: unmanagedCode(found), ok: true } }
    },

    // The fake's filter is wrong (operator precedence: with `device_id` and no
    // `access_code_ids` it returns every non-backup code of every device, managed or not)
    // and it has no `pagination`. Per the document: managed codes of `device_id` and/or
    // `access_code_ids` (backup codes only when asked for by id, as the fake meant),
    // `search`, paged with `limit` (default 55000) and `page_cursor`.
    '/access_codes/list': async (ctx) => {
      const { answer, workspace_id } = await auth(ctx)
      if (answer) return answer
      const { device_id, access_code_ids, search } = ctx.params
      if (device_id == null && access_code_ids == null) {
        return seamError(400, 'invalid_input', "Either 'device_id' or 'access_code_ids' is required (the harness supports these two)")
      }
      const ids = access_code_ids == null ? null : [access_code_ids].flat()
      const codes = db.access_codes
        .filter(inWorkspace(workspace_id))
        .filter((c) => c.is_managed !== false)
        .filter((c) => device_id == null || c.device_id === device_id)
        .filter((c) => (ids == null ? !(c.is_backup ?? false) : ids.includes(c.access_code_id)))
        .filter((c) => matches(c, search))
        .sort(byCreation)
      const { error, page, pagination } = paginate(ctx, codes, 55_000)
      return error ?? { status: 200, json: { access_codes: page.map(managedCode), pagination, ok: true } }
    },

    // No `pagination` in the fake, nor `limit`/`page_cursor`; its codes keep the managed
    // flags. Per the document: the device's unmanaged codes, paged (default limit 300000).
    '/access_codes/unmanaged/list': async (ctx) => {
      const { answer, workspace_id } = await auth(ctx)
      if (answer) return answer
      const { device_id, search } = ctx.params
      if (device_id == null) return seamError(400, 'invalid_input', 'device_id is required')
      const codes = db.access_codes
        .filter(inWorkspace(workspace_id))
        .filter((c) => c.is_managed === false && c.device_id === device_id)
        .filter((c) => matches(c, search))
        .sort(byCreation)
      const { error, page, pagination } = paginate(ctx, codes, 300_000)
      return error ?? { status: 200, json: { access_codes: page.map(unmanagedCode), pagination, ok: true } }
    },

    // The fake makes unmanaged codes `setting`; the document's unmanaged codes are `set` or
    // `unset` (an unmanaged code is one found on the lock): it is stored as `set`.
    '/access_codes/simulate/create_unmanaged_access_code': async (ctx) => {
      const answer = await ctx.forward()
      if (answer.status !== 200 || answer.json?.access_code == null) return answer
      return { status: 200, json: { access_code: unmanagedCode(settleUnmanaged(db, answer.json.access_code)), ok: true } }
    },

    // The fake ignores `limit` and its `access_code_id` filter compares with `device_id`.
    // Forwarded with `access_code_id` folded into `access_code_ids`; the answer cut to
    // `limit` (default 500; the fake's order, oldest first: the document promises none).
    '/events/list': async (ctx) => {
      const { access_code_id, limit, ...params } = ctx.params
      if (access_code_id != null) params.access_code_ids = [...[params.access_code_ids ?? []].flat(), access_code_id]
      const answer = await forwardJson(ctx, '/events/list', params)
      if (answer.status !== 200 || !Array.isArray(answer.json?.events)) return answer
      // The fake lists every workspace's events to any key; Seam, the credential's only.
      const { answer: refused, workspace_id } = await auth(ctx)
      if (refused) return refused
      const max = limit == null ? 500 : Math.floor(Number(limit))
      return { status: 200, json: { ...answer.json, events: answer.json.events.filter(inWorkspace(workspace_id)).slice(0, max) } }
    },

    // The fake answers `{backup_access_code}` only; the document requires `access_code`
    // (the original, now naming its backup in `pulled_backup_access_code_id`) and `ok`
    // too. A backup the fake makes has no `type` (required): Seam's backups take the
    // original's time frame, so it is stored `time_bound` (every later get says so too).
    // And, as on `/access_codes/get`, a code of another workspace than the key's is 404.
    '/access_codes/pull_backup_access_code': async (ctx) => {
      const { answer: refused, workspace_id } = await auth(ctx)
      if (refused) return refused
      const stored = db.access_codes.find((c) => c.access_code_id === ctx.params.access_code_id)
      if (stored != null && (stored.is_managed === false || !inWorkspace(workspace_id)(stored))) {
        return seamError(404, 'access_code_not_found', 'Could not find an access_code with access_code_id')
      }
      const answer = await ctx.forward()
      const pulled = answer.json?.backup_access_code
      if (answer.status !== 200 || pulled == null) return answer
      let backup = db.access_codes.find((c) => c.access_code_id === pulled.access_code_id) ?? pulled
      if (backup.type == null) {
        backup = db.updateAccessCode({ access_code_id: backup.access_code_id, type: backup.starts_at != null ? 'time_bound' : 'ongoing' })
      }
      const original = db.access_codes.find((c) => c.access_code_id === ctx.params.access_code_id)
      return { status: 200, json: { access_code: managedCode(original), backup_access_code: managedCode(backup), ok: true } }
    },

    // An API key the fake does not know: its other routes answer Seam's 401
    // `unauthorized`, this one 400 `missing_workspace_id` (it tries the key as a user
    // session): answered as the others do.
    '/workspaces/get': async (ctx) => {
      const answer = await ctx.forward()
      const token = /^Bearer (.*)$/i.exec(ctx.headers.authorization ?? '')?.[1] ?? ''
      const apiKey = token.startsWith('seam_') && !/^seam_(at|cst|pk)/.test(token)
      if (answer.status === 400 && answer.json?.error?.type === 'missing_workspace_id' && apiKey && ctx.headers['seam-workspace'] == null) {
        // Keeping the fake's `seam-request-id`, as Seam sends one with every answer.
        return { ...seamError(401, 'unauthorized', 'API Key not found'), headers: answer.headers }
      }
      return answer
    },

    // The fake's `next_page_url` names its own address and a `next_page_cursor`
    // parameter the document does not have (it is `page_cursor`; the fake itself reads
    // `page_cursor`): rewritten to the front and `page_cursor`.
    '/devices/list': async (ctx) => {
      const answer = await ctx.forward()
      const next = answer.json?.pagination?.next_page_url
      if (answer.status !== 200 || next == null) return answer
      const url = new URL(next)
      const rewritten = new URL(url.pathname, frontUrl)
      for (const [name, value] of url.searchParams) rewritten.searchParams.append(name === 'next_page_cursor' ? 'page_cursor' : name, value)
      return { status: 200, json: { ...answer.json, pagination: { ...answer.json.pagination, next_page_url: rewritten.toString() } } }
    },
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://front')
    const route = `${req.method} ${url.pathname}`
    const request = `${req.method} ${url.pathname}${url.search}`
    let status = 502
    let headers = { 'content-type': 'application/json' }
    let text
    try {
      const chunks = []
      for await (const chunk of req) chunks.push(chunk)
      const body = Buffer.concat(chunks)
      const bodyText = body.toString('utf8')
      let bodyJson
      if (bodyText.trim() !== '') {
        try {
          bodyJson = JSON.parse(bodyText)
        } catch {}
      }
      const requestFindings = checkRequest(req.method, url.pathname, url.searchParams, bodyJson ?? (bodyText.trim() === '' ? undefined : bodyText))
      let params = {}
      try {
        params = requestParams(req.method, url.pathname, url.searchParams, bodyJson ?? {})
      } catch {}
      const ctx = {
        method: req.method,
        path: url.pathname,
        search: url.search,
        params,
        headers: req.headers,
        body,
        forward: () => forward(req.method, `${url.pathname}${url.search}`, req.headers, body),
      }
      const handler = routes[url.pathname]
      const answer = handler && ['GET', 'POST'].includes(req.method) ? await handler(ctx) : await ctx.forward()
      // The fake's error answers carry a `stack` trace the live API does not send.
      if (answer.json?.error?.stack !== undefined) {
        const { stack: _stack, ...error } = answer.json.error
        answer.json = { ...answer.json, error }
      }
      status = answer.status
      if (answer.text !== undefined && answer.json === undefined) {
        text = answer.text
        if (answer.headers?.['content-type']) headers['content-type'] = answer.headers['content-type']
      } else {
        text = JSON.stringify(answer.json)
      }
      if (answer.headers?.['seam-request-id']) headers['seam-request-id'] = answer.headers['seam-request-id']
      const responseFindings = checkResponse(req.method, url.pathname, status, answer.json !== undefined ? answer.json : text)
      report.requests_checked++
      const entry = record(route, request, [...requestFindings, ...responseFindings])
      entry.requests++
      entry.statuses[status] = (entry.statuses[status] ?? 0) + 1
      if (handler) entry.fixed_by_harness = true
      recordCredential(route, ctx, status)
      if (holdArmed(route)) {
        const hold = holds[route]
        hold.armed--
        hold.holding++
        log(`front: holding the answer to ${request} for ${hold.ms} ms`)
        await new Promise((resolve) => setTimeout(resolve, hold.ms).unref())
        hold.holding--
        hold.held++
      }
    } catch (err) {
      log(`front: ${request} failed:`, err)
      text = JSON.stringify({ error: { type: 'harness_front_error', message: String(err?.message ?? err) }, ok: false })
      status = 502
    }
    res.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(text) })
    res.end(text)
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, resolve)
  })
  frontUrl = `http://${host}:${server.address().port}`

  return {
    url: frontUrl,
    server,
    close() {
      agent.destroy()
      server.close()
      server.closeAllConnections?.()
    },
    // `GET /contract/violations` of the control API.
    report: () => ({
      violations: report.violations,
      violation_count: report.violation_count,
      requests_checked: report.requests_checked,
      by_route: report.by_route,
      notes: [...report.notes.values()],
    }),
    // `GET /credentials` of the control API.
    credentials: () => credentials,
    // `POST /hold` of the control API: hold the answers of the next `count` calls of `route`.
    hold(route, ms, count) {
      const entry = (holds[route] ??= { ms, armed: 0, holding: 0, held: 0 })
      entry.ms = ms
      entry.armed = count
      return { ...entry }
    },
    // `GET /holds` of the control API.
    holds: () => holds,

    reset() {
      credentials.calls = []
      credentials.by_route = {}
      credentials.by_access_code = {}
      report.requests_checked = 0
      report.violations = []
      report.violation_count = 0
      report.notes = new Map()
      report.by_route = {}
    },
  }
}

// `search`: a partial match on name, code or id (case-insensitive), as the document says.
function matches(code, search) {
  if (search == null) return true
  const needle = String(search).toLowerCase()
  return [code.name, code.code, code.access_code_id].some((v) => v != null && String(v).toLowerCase().includes(needle))
}

// An unmanaged code the fake just made: `set`, as Seam's are (see the route above).
export function settleUnmanaged(db, code) {
  return code.status === 'setting' ? db.updateAccessCode({ access_code_id: code.access_code_id, status: 'set' }) : code
}

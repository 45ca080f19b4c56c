#!/usr/bin/env node
// The walk-through behind `scripts/demo` (run that, not this): with the harness and the
// service already running, creates a few access codes in Seam's fake, walks them
// through success, delay, failure, removal and a time-bound schedule, delivers each
// event to the service as a Svix-signed webhook and waits until the mirror shows it.
//
// Input (environment): DEMO_HARNESS (the harness's ready line), DEMO_SERVICE_URL,
// DEMO_DATABASE_URL (read with `psql`). Exit code 0 only if every step was mirrored.

import { execFileSync } from 'node:child_process'

const info = JSON.parse(required('DEMO_HARNESS'))
const serviceUrl = required('DEMO_SERVICE_URL')
const databaseUrl = required('DEMO_DATABASE_URL')
const webhookUrl = `${serviceUrl}/webhooks/seam`
const DEADLINE_MS = 20_000

function required(name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set (run scripts/demo)`)
  return value
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const quote = (text) => `'${String(text).replaceAll("'", "''")}'`

// The harness's control API: JSON in, JSON out, any non-2xx is fatal.
async function control(method, path, body) {
  const res = await fetch(`${info.control_url}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  })
  const json = await res.json().catch(() => null)
  if (!res.ok) throw new Error(`harness ${method} ${path} answered ${res.status}: ${JSON.stringify(json)}`)
  return json
}

// One query through psql; rows of `|`-separated fields.
function sql(query) {
  const out = execFileSync('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', databaseUrl, '-c', query], {
    encoding: 'utf8',
  })
  return out
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split('|'))
}

async function waitFor(what, probe) {
  const started = Date.now()
  for (;;) {
    const result = await probe()
    if (result) return result
    if (Date.now() - started > DEADLINE_MS) throw new Error(`gave up after ${DEADLINE_MS / 1000} s waiting for ${what}`)
    await sleep(50)
  }
}

// ------------------------------------------------------------------ output

const COLUMNS = [22, 40, 15]
const row = (...cells) =>
  console.log('  ' + cells.map((cell, i) => (i < COLUMNS.length ? String(cell).padEnd(COLUMNS[i]) : cell)).join(' '))

function mirrorSummary(accessCodeId) {
  const [found] = sql(
    `SELECT coalesce(status, '(never seen)'), jsonb_array_length(warnings), jsonb_array_length(errors),
            deleted_at IS NOT NULL
     FROM access_codes WHERE access_code_id = ${quote(accessCodeId)}`,
  )
  if (found == null) return '(not mirrored)'
  const [status, warnings, errors, deleted] = found
  const parts = [deleted === 't' ? `deleted (last status ${status})` : status]
  if (warnings !== '0') parts.push(`${warnings} warning${warnings === '1' ? '' : 's'}`)
  if (errors !== '0') parts.push(`${errors} error${errors === '1' ? '' : 's'}`)
  return parts.join(', ')
}

// ------------------------------------------------------------------ steps

// Delivers `event` signed like Svix, waits until the mirror has applied a fetch made
// for it, and prints one line.
async function deliverAndWait(label, event, { msgId, note } = {}) {
  const started = Date.now()
  const delivery = await control('POST', '/deliver', { url: webhookUrl, event, ...(msgId && { msg_id: msgId }) })
  const answer = JSON.parse(delivery.body || '{}')
  if (delivery.status !== 200) throw new Error(`the service answered ${delivery.status}: ${delivery.body}`)
  await waitFor(`the mirror to apply ${event.event_type} for ${label}`, async () => {
    const [found] = sql(`SELECT last_event_id FROM access_codes WHERE access_code_id = ${quote(event.access_code_id)}`)
    return found?.[0] === event.event_id
  })
  const took = `${Date.now() - started} ms`
  row(label, event.event_type + (note ? ` ${note}` : ''), `${delivery.status} ${answer.status}`, `${mirrorSummary(event.access_code_id)}  (${took})`)
  return delivery
}

async function createCode(label, device, extra = {}) {
  const { access_code, event } = await control('POST', '/codes', {
    device_id: info.device_ids[device],
    name: label,
    ...extra,
  })
  await deliverAndWait(label, event)
  return access_code.access_code_id
}

async function step(label, id, eventType, { patch, remove, eventExtra } = {}) {
  if (patch) await control('POST', `/codes/${id}/state`, patch)
  if (remove) await control('DELETE', `/codes/${id}`)
  const { event } = await control('POST', '/events', { event_type: eventType, access_code_id: id, ...eventExtra })
  return { event, delivery: await deliverAndWait(label, event) }
}

// ------------------------------------------------------------------ the walk-through

const started = Date.now()
await waitFor('the service to be ready (GET /readyz)', async () => {
  const res = await fetch(`${serviceUrl}/readyz`).catch(() => null)
  return res?.status === 200
})
// On start the service also reads Seam's event log (catch-up); let that first run end,
// so every event below reaches it by webhook, as the table says.
await waitFor("the service's start-up catch-up run", async () => {
  // One row per workspace; the demo's single key has one.
  const [state] = sql('SELECT COALESCE(bool_or(last_run_at IS NOT NULL), false) FROM catch_up_state')
  return state?.[0] === 't'
})

const now = () => new Date().toISOString()
row('code', 'event (delivered as a signed webhook)', 'webhook', 'mirror afterwards  (time to mirror)')
row('-'.repeat(COLUMNS[0]), '-'.repeat(COLUMNS[1]), '-'.repeat(COLUMNS[2]), '-'.repeat(36))

// 1. Success: created → set on the lock. Then Svix delivers the same message again.
const alice = 'Front door (Alice)'
const aliceId = await createCode(alice, 0, { code: '1234' })
const { event: aliceSet, delivery: aliceDelivery } = await step(alice, aliceId, 'access_code.set_on_device', {
  patch: { status: 'set' },
})
await deliverAndWait(alice, aliceSet, { msgId: aliceDelivery.msg_id, note: '(again)' })

// 2. Delay: the lock is slow to confirm; Seam adds a warning.
const bob = 'Back door (Bob)'
const bobId = await createCode(bob, 1, { code: '2345' })
const delay = {
  warning_code: 'delay_in_setting_on_device',
  message: 'Code programming is delayed; the lock has not confirmed it yet.',
  created_at: now(),
}
await step(bob, bobId, 'access_code.delay_in_setting_on_device', {
  patch: { warnings: [delay] },
  eventExtra: { access_code_warnings: [delay] },
})

// 3. Failure: the lock rejects the code; Seam adds an error.
const carol = 'Garage (Carol)'
const carolId = await createCode(carol, 2, { code: '3456' })
const failure = {
  error_code: 'failed_to_set_on_device',
  message: 'The lock rejected the code.',
  is_access_code_error: true,
  created_at: now(),
}
await step(carol, carolId, 'access_code.failed_to_set_on_device', {
  patch: { errors: [failure] },
  eventExtra: { access_code_errors: [failure] },
})

// 4. Removal: set, then removed from the lock; Seam deletes it (its API answers 404).
const dave = 'Side gate (Dave)'
const daveId = await createCode(dave, 0, { code: '4567' })
await step(dave, daveId, 'access_code.set_on_device', { patch: { status: 'set' } })
await step(dave, daveId, 'access_code.removed_from_device', { remove: true })

// 5. Time-bound: a guest code for two days from now; `unset` until it starts, even
//    once it is preloaded on the lock.
const eve = 'Guest (Eve, weekend)'
const startsAt = new Date(Date.now() + 2 * 86_400_000)
startsAt.setUTCMinutes(0, 0, 0)
const endsAt = new Date(startsAt.getTime() + 2 * 86_400_000)
const eveId = await createCode(eve, 1, { code: '5678', starts_at: startsAt.toISOString(), ends_at: endsAt.toISOString() })
await step(eve, eveId, 'access_code.scheduled_on_device', { patch: { is_scheduled_on_device: true } })

await waitFor('the re-fetch queue to drain', async () => sql('SELECT count(*) FROM access_code_refetches')[0][0] === '0')
const [[events, codes, changes]] = sql(
  `SELECT (SELECT count(*) FROM seam_events), (SELECT count(*) FROM access_codes),
          (SELECT count(*) FROM access_code_history)`,
)
console.log(
  `\n  ${events} events stored (one per event: the repeated delivery was recognised), ` +
    `${codes} codes mirrored, ${changes} history entries, in ${((Date.now() - started) / 1000).toFixed(1)} s.`,
)

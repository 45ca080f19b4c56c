#!/usr/bin/env node
// The contract: Seam's own OpenAPI document (npm `@seamapi/types`, `openapi` from
// `@seamapi/types/connect`) checks what a client sends to Seam and what "Seam" answers.
// The document wins: where Seam's fake disagrees with it, the harness fixes the fake's
// answer (see README.md beside this file), the check is never loosened.
//
//   checkRequest(method, path, query, body)    -> findings
//   checkResponse(method, path, status, body)  -> findings
//
// A finding is `{ level: 'violation' | 'note', method, path, status?, where, message }`.
// Violations are failures; notes are what the document cannot judge (a status it does not
// list, or lists without a schema, e.g. the 404 of a missing code: the guides have it, the
// document does not). Error answers are still held to Seam's error envelope
// `{error: {type, message}, ok: false}`.
//
// CLI:
//   node contract.mjs dump <file>                                     the document as JSON
//   node contract.mjs check-response <METHOD> <path> <status> <json-file>
//   node contract.mjs check-request <METHOD> <path> <query-string> [<json-file>]
//   node contract.mjs check-batch <json-file>    many at once: a JSON array of
//     {label, kind: "response", method, path, status, body} and
//     {label, kind: "request", method, path, query?, body?} (one Node start for all)
// exit 0 when there is no violation (notes are printed), 1 when there is, 2 on misuse.

import { readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import Ajv from 'ajv'
import addFormats from 'ajv-formats'
import { openapi } from '@seamapi/types/connect'

export { openapi }
export const SPEC_VERSION = '@seamapi/types 1.977.0'
const DOC_ID = 'seam-openapi'

// ---------------------------------------------------------------- OpenAPI 3.0 → JSON Schema

// The one translation from OpenAPI 3.0's schema dialect to the JSON Schema ajv checks:
// - `nullable: true` → `null` is allowed too (added to `type`, and to `enum` when there is
//   one; `{anyOf: [schema, {type: null}]}` when the schema has no `type`);
// - `oneOf` without a `discriminator` → `anyOf`: Seam generates its document from zod
//   unions, which take the first branch that matches; JSON Schema's `oneOf` would refuse a
//   value two branches accept (e.g. `/events/list`'s `between` items: `{type: string}` or
//   `{type: string, format: date-time}`);
// - `oneOf` with a `discriminator` stays, and ajv's `discriminator` keyword picks the
//   branch by the tag (so an unknown `warning_code` is named as such);
// - `exclusiveMinimum: true` + `minimum: n` → `exclusiveMinimum: n` (and the same for the
//   maximum): a boolean there is OpenAPI 3.0 (JSON Schema draft 4);
// - `$ref`s to `#/components/...` point into the document registered as `seam-openapi`.
// Everything else (`format: uuid | date-time | uri | email | float`, `enum`, `required`,
// `additionalProperties`) is JSON Schema already; `x-*`, `description`, `deprecated` are
// ignored.
export function toJsonSchema(schema) {
  if (Array.isArray(schema)) return schema.map(toJsonSchema)
  if (schema === null || typeof schema !== 'object') return schema
  const out = {}
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'nullable' || key.startsWith('x-') || key === 'example' || key === 'description') continue
    if (key === '$ref' && typeof value === 'string' && value.startsWith('#/')) {
      out.$ref = `${DOC_ID}${value}`
    } else if (key === 'properties' || key === 'patternProperties') {
      out[key] = Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, toJsonSchema(sub)]))
    } else {
      out[key] = toJsonSchema(value)
    }
  }
  for (const [exclusive, bound] of [['exclusiveMinimum', 'minimum'], ['exclusiveMaximum', 'maximum']]) {
    if (out[exclusive] === true) {
      out[exclusive] = out[bound]
      delete out[bound]
    } else if (out[exclusive] === false) delete out[exclusive]
  }
  if (out.oneOf && !out.discriminator) {
    out.anyOf = out.oneOf
    delete out.oneOf
  }
  if (schema.nullable === true) {
    if (out.enum && !out.enum.includes(null)) out.enum = [...out.enum, null]
    if (typeof out.type === 'string') out.type = [out.type, 'null']
    else if (out.type === undefined) return { anyOf: [out, { type: 'null' }] }
  }
  return out
}

const ajv = new Ajv({ strict: false, allErrors: true, discriminator: true, validateSchema: false })
addFormats(ajv)
// OpenAPI's numeric formats: any number of the type is fine.
for (const format of ['float', 'double', 'int32', 'int64']) ajv.addFormat(format, { type: 'number', validate: () => true })
ajv.addSchema({ $id: DOC_ID, components: toJsonSchema(openapi.components) })

const validators = new Map()
function validator(key, schema) {
  if (!validators.has(key)) validators.set(key, ajv.compile(toJsonSchema(schema)))
  return validators.get(key)
}

// ajv's errors as `where: message` lines; the branches of a failed `anyOf` are folded
// into one line per place.
function describeErrors(errors, base) {
  const lines = []
  const seen = new Set()
  for (const e of errors ?? []) {
    if (e.keyword === 'anyOf' || e.keyword === 'if') continue
    let message = e.message
    if (e.keyword === 'enum') message += `: ${JSON.stringify(e.params.allowedValues.length > 8 ? [...e.params.allowedValues.slice(0, 8), '…'] : e.params.allowedValues)}`
    if (e.keyword === 'additionalProperties') message += `: '${e.params.additionalProperty}'`
    if (e.keyword === 'discriminator') message = `${e.params.tag} ${JSON.stringify(e.params.tagValue)} is not one the document lists (${e.message})`
    const where = `${base}${e.instancePath}`
    const line = `${where}: ${message}`
    if (!seen.has(line)) {
      seen.add(line)
      lines.push({ where, message })
    }
  }
  const anyOf = (errors ?? []).filter((e) => e.keyword === 'anyOf')
  for (const e of anyOf) {
    if (!lines.some((l) => l.where.startsWith(`${base}${e.instancePath}`))) {
      lines.push({ where: `${base}${e.instancePath}`, message: 'matches none of the documented alternatives' })
    }
  }
  return lines
}

// ---------------------------------------------------------------- requests

function operation(method, path) {
  const item = openapi.paths[path]
  if (item == null) return { error: `${path} is not in Seam's OpenAPI document` }
  const op = item[method.toLowerCase()]
  if (op == null) {
    const allowed = Object.keys(item).map((m) => m.toUpperCase()).join(', ')
    return { error: `${method.toUpperCase()} ${path} is not documented (the document has ${allowed})` }
  }
  return { op }
}

// A query value (a string) as the parameter's schema types it. Arrays are repeated keys
// (OpenAPI 3.0's default `style: form, explode: true`; `name[]` is taken as `name`).
function coerce(values, schema) {
  const type = Array.isArray(schema?.type) ? schema.type[0] : schema?.type
  if (type === 'array') return values.map((v) => coerce([v], schema.items))
  const value = values[values.length - 1]
  if (values.length > 1) return values // a repeated scalar: the schema refuses an array
  if (type === 'number' || type === 'integer') return value !== '' && !Number.isNaN(Number(value)) ? Number(value) : value
  if (type === 'boolean') return value === 'true' ? true : value === 'false' ? false : value
  if (type === 'object') {
    try {
      return JSON.parse(value)
    } catch {
      return value
    }
  }
  return value
}

// `query`: a URLSearchParams, a `{name: string | string[]}` object or a query string.
function queryEntries(query) {
  if (query == null) return new Map()
  const params = typeof query === 'string' ? new URLSearchParams(query.replace(/^\?/, '')) : query
  const entries = new Map()
  const add = (name, value) => {
    const key = name.endsWith('[]') ? name.slice(0, -2) : name
    entries.set(key, [...(entries.get(key) ?? []), String(value)])
  }
  if (params instanceof URLSearchParams) for (const [name, value] of params) add(name, value)
  else for (const [name, value] of Object.entries(params)) for (const v of [value].flat()) add(name, v)
  return entries
}

// The parameters of a request as the document types them: the JSON body of a POST, or
// the query of a GET with each value coerced to its parameter's schema (numbers, booleans,
// arrays from repeated keys). Undocumented parameters are kept as strings.
export function requestParams(method, path, query, body) {
  if (method.toUpperCase() !== 'GET') {
    if (typeof body === 'string') return body.trim() === '' ? {} : JSON.parse(body)
    return body ?? {}
  }
  const { op } = operation(method, path)
  const params = (op?.parameters ?? []).filter((p) => p.in === 'query')
  const out = {}
  for (const [name, values] of queryEntries(query)) {
    const schema = params.find((p) => p.name === name)?.schema
    out[name] = schema ? coerce(values, schema) : values[values.length - 1]
  }
  return out
}

const finding = (level, method, path, where, message, extra = {}) => ({
  level,
  method: method.toUpperCase(),
  path,
  ...extra,
  where,
  message,
})

export function checkRequest(method, path, query, body) {
  const v = (where, message) => finding('violation', method, path, where, message)
  const { op, error } = operation(method, path)
  if (error) return [v('request', error)]
  const out = []
  const params = (op.parameters ?? []).filter((p) => p.in === 'query')
  const entries = queryEntries(query)
  for (const [name, values] of entries) {
    const param = params.find((p) => p.name === name)
    if (param == null) {
      out.push(v(`query.${name}`, `unknown query parameter '${name}' (not documented for ${method.toUpperCase()} ${path})`))
      continue
    }
    const value = coerce(values, param.schema)
    const check = validator(`${method} ${path} query ${name}`, param.schema ?? {})
    if (!check(value)) out.push(...describeErrors(check.errors, `query.${name}`).map((l) => v(l.where, l.message)))
  }
  for (const p of params) if (p.required && !entries.has(p.name)) out.push(v(`query.${p.name}`, 'required parameter missing'))

  const hasBody = body !== undefined && body !== null && !(typeof body === 'string' && body.trim() === '')
  const schema = op.requestBody?.content?.['application/json']?.schema
  if (schema == null) {
    if (hasBody && !(typeof body === 'object' && Object.keys(body).length === 0)) {
      out.push(v('body', `${method.toUpperCase()} ${path} documents no request body`))
    }
    return out
  }
  let json = body
  if (typeof body === 'string') {
    try {
      json = hasBody ? JSON.parse(body) : {}
    } catch (e) {
      return [...out, v('body', `not JSON: ${e.message}`)]
    }
  }
  if (!hasBody) json = {}
  if (op.requestBody.required && !hasBody) out.push(v('body', 'required request body missing'))
  if (json !== null && typeof json === 'object' && !Array.isArray(json)) {
    const known = documentedProperties(schema)
    if (known != null) {
      for (const name of Object.keys(json)) {
        if (!known.has(name)) out.push(v(`body.${name}`, `unknown body parameter '${name}' (not documented for ${method.toUpperCase()} ${path})`))
      }
    }
  }
  const check = validator(`${method} ${path} body`, schema)
  if (!check(json)) out.push(...describeErrors(check.errors, 'body').map((l) => v(l.where, l.message)))
  return out
}

// The property names a body schema documents (of every branch of a oneOf/anyOf/allOf);
// null when it allows any.
function documentedProperties(schema) {
  const resolved = schema.$ref ? resolveRef(schema.$ref) : schema
  if (resolved.additionalProperties != null && resolved.additionalProperties !== false) return null
  const names = new Set(Object.keys(resolved.properties ?? {}))
  for (const branch of [...(resolved.oneOf ?? []), ...(resolved.anyOf ?? []), ...(resolved.allOf ?? [])]) {
    const sub = documentedProperties(branch)
    if (sub == null) return null
    for (const n of sub) names.add(n)
  }
  return names
}

function resolveRef(ref) {
  return ref
    .replace(/^#\//, '')
    .split('/')
    .reduce((node, part) => node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], openapi)
}

// ---------------------------------------------------------------- responses

// Seam's error envelope (its guides; the document lists 400/401 without a schema).
const errorEnvelope = {
  type: 'object',
  required: ['error', 'ok'],
  properties: {
    error: {
      type: 'object',
      required: ['type', 'message'],
      properties: { type: { type: 'string', minLength: 1 }, message: { type: 'string' } },
    },
    ok: { const: false },
  },
}
const checkEnvelope = ajv.compile(errorEnvelope)

export function checkResponse(method, path, status, body) {
  status = Number(status)
  const at = { status }
  const v = (where, message) => finding('violation', method, path, where, message, at)
  const note = (where, message) => finding('note', method, path, where, message, at)
  const { op, error } = operation(method, path)
  if (error) return [v('response', `answer to an undocumented operation: ${error}`)]
  let json = body
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    try {
      json = JSON.parse(String(body))
    } catch (e) {
      return [v('body', `not JSON: ${e.message}`)]
    }
  }
  const out = []
  const documented = op.responses?.[String(status)]
  const schema = documented?.content?.['application/json']?.schema
  if (documented == null) out.push(note('status', `undocumented status ${status} (the document lists ${Object.keys(op.responses ?? {}).join(', ')})`))
  else if (schema == null) out.push(note('status', `status ${status} is documented without a schema`))
  if (schema != null) {
    const check = validator(`${method} ${path} ${status}`, schema)
    if (!check(json)) out.push(...describeErrors(check.errors, 'body').map((l) => v(l.where, l.message)))
    if (status >= 200 && status < 300 && json?.ok !== true) out.push(v('body.ok', 'a success answer says "ok": true'))
  } else if (status >= 400) {
    if (!checkEnvelope(json)) {
      out.push(...describeErrors(checkEnvelope.errors, 'body').map((l) => v(l.where, `Seam's error envelope {error: {type, message}, ok: false}: ${l.message}`)))
    }
  }
  return out
}

// The document's schema of one event type (a branch of `components.schemas.event`), or
// undefined for a type it does not list.
export function eventSchema(eventType) {
  return openapi.components.schemas.event.oneOf.find((branch) => branch.properties?.event_type?.enum?.includes(eventType))
}

export const violationsOf = (findings) => findings.filter((f) => f.level === 'violation')
export const format = (f) =>
  `${f.level === 'note' ? 'note' : 'VIOLATION'} ${f.method} ${f.path}${f.status != null ? ` → ${f.status}` : ''}: ${f.where}: ${f.message}`

// ---------------------------------------------------------------- CLI

function usage() {
  console.error(
    'usage: node contract.mjs dump <file>\n' +
      '       node contract.mjs check-response <METHOD> <path> <status> <json-file>\n' +
      '       node contract.mjs check-request <METHOD> <path> <query-string> [<json-file>]\n' +
      '       node contract.mjs check-batch <json-file>',
  )
  process.exit(2)
}

function cli(argv) {
  const [command, ...args] = argv
  let findings
  if (command === 'dump' && args.length === 1) {
    writeFileSync(args[0], JSON.stringify(openapi, null, 2) + '\n')
    console.log(`wrote ${SPEC_VERSION}'s OpenAPI document (${Object.keys(openapi.paths).length} paths) to ${args[0]}`)
    return 0
  } else if (command === 'check-response' && args.length === 4) {
    const [method, path, status, file] = args
    findings = checkResponse(method, path, status, readFileSync(file, 'utf8'))
  } else if (command === 'check-request' && (args.length === 3 || args.length === 4)) {
    const [method, path, query, file] = args
    findings = checkRequest(method, path, query, file ? readFileSync(file, 'utf8') : undefined)
  } else if (command === 'check-batch' && args.length === 1) {
    let violations = 0
    for (const item of JSON.parse(readFileSync(args[0], 'utf8'))) {
      const found =
        item.kind === 'request'
          ? checkRequest(item.method, item.path, item.query ?? '', item.body)
          : checkResponse(item.method, item.path, item.status, item.body)
      violations += violationsOf(found).length
      console.log(`${violationsOf(found).length === 0 ? 'ok  ' : 'FAIL'} ${item.label ?? `${item.method} ${item.path}`}`)
      for (const f of found) console.log(`     ${format(f)}`)
    }
    console.log(violations === 0 ? `ok: no violation of ${SPEC_VERSION}'s OpenAPI document` : `${violations} violation(s) of ${SPEC_VERSION}'s OpenAPI document`)
    return violations === 0 ? 0 : 1
  } else {
    usage()
  }
  for (const f of findings) console.log(format(f))
  const violations = violationsOf(findings).length
  if (violations === 0) console.log(`ok: no violation of ${SPEC_VERSION}'s OpenAPI document`)
  return violations === 0 ? 0 : 1
}

const invokedAsScript = () => {
  try {
    return realpathSync(resolve(process.argv[1])) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}
if (process.argv[1] && invokedAsScript()) process.exit(cli(process.argv.slice(2)))

// The comparison receiver of benches/suite.rs: a Seam webhook endpoint as Seam's
// docs write one (express, @seamapi/webhook, pg), doing per delivery the same
// minimal durable work as the suite's pgbench baseline, in one transaction:
// insert the event row under its delivery id, upsert one job row for its code.
//
//   PORT=0 DATABASE_URL=postgres://… WEBHOOK_SECRET=whsec_… node server.js
//
// Prints "node-receiver listening <port>" once it listens. The tables
// (bench_min_events, bench_min_jobs) are created by the suite.
import { env } from 'node:process'

import { SeamWebhook } from '@seamapi/webhook'
import express from 'express'
import pg from 'pg'

const pool = new pg.Pool({
  connectionString: env.DATABASE_URL,
  max: Number(env.POOL_SIZE ?? 10),
})
const webhook = new SeamWebhook(env.WEBHOOK_SECRET)
const app = express()

const INSERT_EVENT =
  'INSERT INTO bench_min_events (delivery_id, payload) VALUES ($1, $2::jsonb)'
const UPSERT_JOB =
  'INSERT INTO bench_min_jobs AS j (code, requests, updated_at) VALUES ($1, 1, now()) ' +
  'ON CONFLICT (code) DO UPDATE SET requests = j.requests + 1, updated_at = now()'

app.post(
  '/webhooks/seam',
  express.raw({ type: 'application/json', limit: '256kb' }),
  async (req, res) => {
    if (!Buffer.isBuffer(req.body)) {
      return res.status(400).json({ error: 'expected a JSON body' })
    }
    let event
    try {
      event = webhook.verify(req.body, req.headers)
    } catch {
      return res.status(401).json({ error: 'invalid signature' })
    }
    const deliveryId = req.get('webhook-id') ?? req.get('svix-id')
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      await client.query(INSERT_EVENT, [deliveryId, req.body.toString('utf8')])
      if (typeof event.access_code_id === 'string') {
        await client.query(UPSERT_JOB, [event.access_code_id])
      }
      await client.query('COMMIT')
      res.status(200).json({ ok: true })
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {})
      if (err.code === '23505') {
        // A redelivery: stored already.
        return res.status(200).json({ ok: true, duplicate: true })
      }
      console.error('storing the event failed', err)
      res.status(500).json({ error: 'storage failed' })
    } finally {
      client.release()
    }
  },
)

const server = app.listen(Number(env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`node-receiver listening ${server.address().port}`)
})

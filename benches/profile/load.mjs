// A signed webhook load generator for benches/profile/*.sh (BENCHMARKS.md).
// usage: node load.mjs URL SECRET N CONCURRENCY [codes]
import http from 'node:http';
import crypto from 'node:crypto';
const [url, secret, nStr, cStr, codesStr] = process.argv.slice(2);
const n = +nStr, c = +cStr, codes = +(codesStr || 1000);
const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
const u = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: c });
const now = Math.floor(Date.now() / 1000);
const list = [];
for (let i = 0; i < n; i++) {
  const body = JSON.stringify({
    event_id: crypto.randomUUID(), event_type: 'access_code.set_on_device',
    workspace_id: '0f4a4a4e-2a0b-4d8e-9d6c-2a6f1b9c3d10', device_id: '6f0e3c2a-1b7d-4e59-8a3f-9c2d1e0b4a77',
    connected_account_id: 'c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f', access_code_id: `ac_${i % codes}`,
    created_at: new Date().toISOString(), occurred_at: new Date().toISOString(),
    event_description: 'The access code was set on the device.', code: '8172',
    device_custom_metadata: { unit: '4B', property: 'Harbour View' }, connected_account_custom_metadata: {} });
  const id = 'msg_' + crypto.randomUUID().replaceAll('-', '');
  const sig = crypto.createHmac('sha256', key).update(`${id}.${now}.${body}`).digest('base64');
  list.push({ body, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'svix-id': id, 'svix-timestamp': String(now), 'svix-signature': 'v1,' + sig } });
}
let next = 0; const lat = [];
function send(d) { return new Promise((res, rej) => { const t = process.hrtime.bigint();
  const r = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: d.headers, agent }, (resp) => {
    resp.resume(); resp.on('end', () => { if (resp.statusCode !== 200) rej(new Error('status ' + resp.statusCode)); lat.push(Number(process.hrtime.bigint() - t) / 1e6); res(); }); });
  r.on('error', rej); r.end(d.body); }); }
const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: c }, async () => { while (next < list.length) { await send(list[next++]); } }));
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
lat.sort((a, b) => a - b);
console.log(JSON.stringify({ n, c, rate: Math.round(n / secs), p50: lat[Math.floor(lat.length * 0.5)].toFixed(2), p99: lat[Math.floor(lat.length * 0.99)].toFixed(2) }));
process.exit(0);

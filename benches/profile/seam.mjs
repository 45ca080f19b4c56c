// A Seam stand-in for benches/profile/cpu.sh end to end (MODE=all): answers
// /access_codes/get and /access_codes/unmanaged/get at once with a set code, and
// counts the calls (GET /calls).
// usage: node seam.mjs PORT
import http from 'node:http';
const port = +process.argv[2];
let calls = 0;
http.createServer((req, res) => {
  if (req.url === '/calls') { res.end(String(calls)); return; }
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    calls++;
    let id = 'ac_unknown';
    try { id = JSON.parse(body || '{}').access_code_id || new URL(req.url, 'http://x').searchParams.get('access_code_id') || id; } catch {}
    const code = { access_code_id: id, device_id: 'device_bench', workspace_id: 'ws_bench', name: 'Bench guest',
      code: '1234', type: 'ongoing', status: 'set', warnings: [], errors: [], is_managed: true };
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ access_code: code, ok: true }));
  });
}).listen(port, '127.0.0.1');

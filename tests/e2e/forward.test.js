// ws-agent's gateway forwarder on its own (ws-agent/forward.c): a real
// ws-agent with --gateway-fd (an O_PATH fd of a Unix socket in a 0700 dir) and
// --gateway-port; a Node echo server on that Unix socket stands for the
// gateway.  Bytes pass both ways unchanged (5 MiB, so the 64 KiB buffers fill
// and backpressure works), half-close passes through, 80 concurrent
// connections (more than the 64 pairs: the rest wait in the backlog) all
// complete, and the upstream is reached only through the fd (the dir is 0700).
'use strict';
const {spawn} = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const path = require('path');
const L = require('./lib');

const O_PATH = 0o10000000;

function freePort() {
  return new Promise(res => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}

// Send buf, half-close, read to EOF: the bytes that came back.
function roundTrip(port, buf) {
  return new Promise((res, rej) => {
    const chunks = [];
    const c = net.connect(port, '127.0.0.1', () => c.end(buf));
    c.on('data', d => chunks.push(d));
    c.on('end', () => res(Buffer.concat(chunks)));
    c.on('error', rej);
  });
}

(async () => {
  const dir = L.tmpdir('fwd');
  const priv = path.join(dir, 'priv');
  fs.mkdirSync(priv, {mode: 0o700});
  const sockPath = path.join(priv, 'gw.sock');
  let upstreamConns = 0;
  // Echo, slowly at first (pause) so the forwarder's buffers fill up.
  const echo = net.createServer(s => { upstreamConns++; s.pause(); setTimeout(() => s.resume(), 200); s.pipe(s); });
  await new Promise(r => echo.listen(sockPath, r));
  fs.chmodSync(sockPath, 0o666);
  const gwfd = fs.openSync(sockPath, O_PATH);
  const port = await freePort();
  const ready = fs.mkdtempSync(path.join(dir, 'r-'));
  const wsa = spawn(process.env.WS_AGENT, ['--socket', path.join(ready, 'wsa.sock'), '--gateway-fd', '3', '--gateway-port', String(port),
    '--context', path.join(ready, 'ctx.json')], {stdio: ['ignore', 'inherit', 'inherit', gwfd]});
  fs.closeSync(gwfd);
  await L.until(async () => fs.existsSync(path.join(ready, 'wsa.sock')), 'ws-agent listening');

  const big = crypto.randomBytes(5 << 20);
  const back = await roundTrip(port, big);
  L.check(back.equals(big), '5 MiB pass both ways byte for byte (with half-close)', big.length, back.length);

  const many = await Promise.all(Array.from({length: 80}, (_, i) => roundTrip(port, Buffer.from(`conn ${i} `.repeat(1000)))));
  L.check(many.every((b, i) => b.equals(Buffer.from(`conn ${i} `.repeat(1000)))), '80 concurrent connections (cap 64) all complete intact', 80, many.length);
  L.check(upstreamConns === 81, 'one upstream connection per accepted connection', 81, upstreamConns);

  // An abrupt client close while the upstream is silent: the pair goes, no spin.
  const c = net.connect(port, '127.0.0.1');
  await new Promise(r => c.on('connect', r));
  c.destroy();
  await new Promise(r => setTimeout(r, 300));
  const st = fs.readFileSync(`/proc/${wsa.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const cpuTicks = Number(st[11]) + Number(st[12]);
  await new Promise(r => setTimeout(r, 1000));
  const st2 = fs.readFileSync(`/proc/${wsa.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const spent = Number(st2[11]) + Number(st2[12]) - cpuTicks;
  L.check(spent < 20, 'idle forwarder does not spin after a client vanished (CPU ticks in 1 s)', '< 20', spent);

  wsa.kill('SIGTERM');
  echo.close();
  L.done();
})().catch(e => { console.error(e); process.exit(1); });

// A small HTTP + WebSocket server that preview.test.js starts inside a
// sandbox on 127.0.0.1:PORT (plain Node, no packages: the sandbox sees none).
//   GET  /info?...   -> JSON {method, url, headers} (and custom response headers)
//   GET  /stream     -> chunked: "first\n" at once, "second\n" once /release was hit
//   GET  /release    -> lets /stream finish
//   GET  /big?n=N    -> N bytes with a Content-Length
//   POST /echo       -> the request body back (sha and length in headers)
//   POST /slowecho   -> the same, after not reading for 1.5 s (the sender's side backs up)
//   GET  /ws (upgrade) -> echoes every message (text stays text, binary binary);
//                         after "ping me" it pings, and reports the pong as "pong:<payload>";
//                         "headers?" is answered with the upgrade request's headers as JSON
'use strict';
const crypto = require('crypto');
const http = require('http');

const port = Number(process.argv[2]);
let release = null;

const srv = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  if (u.pathname === '/info') {
    res.setHeader('content-type', 'application/json');
    res.setHeader('x-inside', 'yes');
    res.setHeader('x-request-id', 'pv-info');
    res.setHeader('x-whatever-custom', '1'); // a name no fixed list has
    res.setHeader('x-custom-multi', 'm1');
    res.setHeader('cache-control', 'no-store');
    res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; HttpOnly']);
    res.end(JSON.stringify({method: req.method, url: req.url, headers: req.headers}));
  } else if (u.pathname === '/stream') {
    res.setHeader('content-type', 'text/plain');
    res.write('first\n');
    new Promise(r => { release = r; }).then(() => res.end('second\n'));
  } else if (u.pathname === '/release') {
    if (release) release();
    res.end(release ? 'released' : 'nothing to release');
  } else if (u.pathname === '/big') {
    const n = Number(u.searchParams.get('n'));
    const buf = Buffer.alloc(n, 'x');
    res.setHeader('content-length', n);
    res.end(buf);
  } else if (u.pathname === '/echo' || u.pathname === '/slowecho') {
    const chunks = [];
    if (u.pathname === '/slowecho') {
      req.pause();
      setTimeout(() => req.resume(), 1500);
    }
    req.on('data', c => chunks.push(c));
    req.on('end', () => {
      const b = Buffer.concat(chunks);
      res.setHeader('x-body-sha', crypto.createHash('sha256').update(b).digest('hex'));
      res.end(b);
    });
  } else {
    res.statusCode = 404;
    res.end('no such page inside\n');
  }
});

// A minimal RFC 6455 server side: handshake, unmask, reassemble, echo.
srv.on('upgrade', (req, sock, head) => {
  const key = req.headers['sec-websocket-key'];
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let buf = head && head.length ? Buffer.from(head) : Buffer.alloc(0);
  let parts = [], msgOp = 0;
  const send = (op, payload) => {
    const n = payload.length;
    const h = n < 126 ? Buffer.from([0x80 | op, n]) :
      n < 65536 ? Buffer.from([0x80 | op, 126, n >> 8, n & 255]) :
      Buffer.concat([Buffer.from([0x80 | op, 127, 0, 0, 0, 0]), (() => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; })()]);
    sock.write(Buffer.concat([h, payload]));
  };
  const onData = d => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = buf[0] & 0x80, op = buf[0] & 15, masked = buf[1] & 0x80;
      let len = buf[1] & 127, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      const mask = masked ? buf.slice(off, off + 4) : null;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const p = Buffer.from(buf.slice(off, off + len));
      if (mask) for (let i = 0; i < p.length; i++) p[i] ^= mask[i & 3];
      buf = buf.slice(off + len);
      if (op === 8) { send(8, p.slice(0, 2)); sock.end(); return; }
      if (op === 9) { send(10, p); continue; }
      if (op === 10) { send(1, Buffer.concat([Buffer.from('pong:'), p])); continue; }
      if (op !== 0) msgOp = op;
      parts.push(p);
      if (fin) {
        const m = Buffer.concat(parts);
        parts = [];
        if (msgOp === 1 && m.toString() === 'headers?') send(1, Buffer.from(JSON.stringify(req.headers)));
        else send(msgOp, m);
        if (msgOp === 1 && m.toString() === 'ping me') send(9, Buffer.from('hi'));
      }
    }
  };
  sock.on('data', onData);
  onData(Buffer.alloc(0)); /* frames that came with the upgrade request */
  sock.on('error', () => {});
});

srv.listen(port, '127.0.0.1', () => console.log(`preview-server listening on ${port}`));

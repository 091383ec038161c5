#!/usr/bin/env node
// gitserver.js — git's smart HTTP protocol on 127.0.0.1:<free port>, through
// `git http-backend` (CGI), with HTTP basic auth.  For tests and benches.
//
//   node tests/gitserver.js --root DIR [--token TOKEN] [--delay-ms N] [--forbid REPO] [--verbose]
//
// Serves every repository under DIR (GIT_HTTP_EXPORT_ALL), smart HTTP fetch only
// (403 for dumb-protocol requests and push).  With --token,
// every request needs basic auth whose password is TOKEN (any user name);
// otherwise 401 with WWW-Authenticate.  --delay-ms holds each request that
// long before answering (timeouts); --forbid answers 403 (after auth) for
// REPO (e.g. r.git); --verbose shows
// http-backend's stderr.  Prints "PORT <n>" once listening; stops
// on SIGTERM or when stdin closes.
'use strict';
const http = require('http');
const { spawn } = require('child_process');

const args = process.argv.slice(2);
function opt(name, def) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}
const root = opt('--root');
const token = opt('--token', null);
const delayMs = Number(opt('--delay-ms', '0'));
const verbose = args.includes('--verbose');
const forbid = opt('--forbid', null);
if (!root) {
  process.stderr.write('usage: gitserver.js --root DIR [--token TOKEN] [--delay-ms N]\n');
  process.exit(2);
}
const BACKEND = process.env.GIT_HTTP_BACKEND || '/usr/lib/git-core/git-http-backend';

function authorized(req) {
  if (token === null) return { ok: true, user: '' };
  const h = req.headers.authorization || '';
  const m = /^Basic\s+(.+)$/i.exec(h);
  if (!m) return { ok: false };
  const dec = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = dec.indexOf(':');
  if (colon < 0) return { ok: false };
  const user = dec.slice(0, colon), pass = dec.slice(colon + 1);
  return { ok: pass === token, user };
}

function serve(req, res) {
  const a = authorized(req);
  if (!a.ok) {
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="git"', 'Content-Type': 'text/plain' });
    res.end('authentication required\n');
    return;
  }
  const u = new URL(req.url, 'http://localhost');
  if (forbid && u.pathname.startsWith(`/${forbid}/`)) {
    res.writeHead(403, { 'Content-Type': 'text/plain' });
    res.end('forbidden\n');
    return;
  }
  // Smart HTTP, fetch only: the ref advertisement and upload-pack; no dumb
  // object requests, no push.
  const smart = (u.pathname.endsWith('/info/refs') && u.searchParams.get('service') === 'git-upload-pack') ||
    (u.pathname.endsWith('/git-upload-pack') && req.method === 'POST');
  if (!smart) {
    res.writeHead(403, { 'Content-Type': 'text/plain' });
    res.end('smart HTTP fetch only\n');
    return;
  }
  const env = {
    PATH: process.env.PATH || '/usr/bin:/bin',
    GIT_PROJECT_ROOT: root,
    GIT_HTTP_EXPORT_ALL: '1',
    PATH_INFO: decodeURIComponent(u.pathname),
    QUERY_STRING: u.search.replace(/^\?/, ''),
    REQUEST_METHOD: req.method,
    CONTENT_TYPE: req.headers['content-type'] || '',
    REMOTE_USER: a.user || '',
    REMOTE_ADDR: req.socket.remoteAddress || '',
    GIT_CONFIG_COUNT: '1',
    GIT_CONFIG_KEY_0: 'safe.directory',
    GIT_CONFIG_VALUE_0: '*',
  };
  if (req.headers['content-length']) env.CONTENT_LENGTH = req.headers['content-length'];
  if (req.headers['content-encoding']) env.HTTP_CONTENT_ENCODING = req.headers['content-encoding'];
  if (req.headers['git-protocol']) env.GIT_PROTOCOL = req.headers['git-protocol'];
  const cgi = spawn(BACKEND, [], { env, stdio: ['pipe', 'pipe', verbose ? 'inherit' : 'ignore'] });
  req.pipe(cgi.stdin);
  cgi.stdin.on('error', () => {});
  let head = Buffer.alloc(0), headerDone = false;
  cgi.stdout.on('data', (chunk) => {
    if (headerDone) { res.write(chunk); return; }
    head = Buffer.concat([head, chunk]);
    let end = head.indexOf('\r\n\r\n'), skip = 4;
    if (end < 0) { end = head.indexOf('\n\n'); skip = 2; }
    if (end < 0) return;
    headerDone = true;
    let status = 200;
    const headers = {};
    for (const line of head.slice(0, end).toString('latin1').split(/\r?\n/)) {
      const c = line.indexOf(':');
      if (c < 0) continue;
      const k = line.slice(0, c).trim(), v = line.slice(c + 1).trim();
      if (k.toLowerCase() === 'status') status = parseInt(v, 10) || 200;
      else headers[k] = v;
    }
    res.writeHead(status, headers);
    res.write(head.slice(end + skip));
  });
  cgi.stdout.on('end', () => {
    if (!headerDone) res.writeHead(502);
    res.end();
  });
  cgi.on('error', () => { if (!res.headersSent) res.writeHead(500); res.end(); });
}

const server = http.createServer((req, res) => {
  if (delayMs > 0) setTimeout(() => serve(req, res), delayMs);
  else serve(req, res);
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

// OpenAPI (issue 15 point 4): docs/openapi.json cannot drift from cortexd.
// A real cortexd serves it at GET /v1/openapi.json (the same bytes, an ETag,
// 304); then every route of the spec is called with valid and invalid input
// (a real session with a real agent, a real turn, a preview server inside the
// sandbox, a real image build and import), and every real response is
// validated against the spec with ajv (JSON Schema 2020-12): its status must
// be declared, its body must match.  The session WebSocket's frames, both
// ways, are validated against the frame schemas (exec's too: output, stdin,
// a pty resized, a cancel, refusals).  Then: every operation of the spec was
// answered (a success and a 4xx each), every method a path does not list
// gets the declared 405, and every route family cortexd's dispatch code
// names is a path of the spec.
'use strict';
const {execFileSync} = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const L = require('./lib');
const C = require('./openapi_check');

const PORT = 8123; // the preview server inside the sandbox

// A request to a spec path: params fill {x}; the response is checked against
// the operation.  o: {tok, body (JSON), raw (bytes), ctype, headers, query, expect}.
function caller(base) {
  return async function call(what, method, specPath, params = {}, o = {}) {
    let url = specPath.replace(/\{(\w+)\}/g, (_, k) => (k === 'path' ? params[k] : encodeURIComponent(params[k])));
    if (o.query) url += '?' + o.query;
    const headers = Object.assign({}, o.headers || {});
    if (o.tok) headers.authorization = 'Bearer ' + o.tok;
    let body;
    if (o.body !== undefined) { body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body); headers['content-type'] = 'application/json'; }
    if (o.raw !== undefined) { body = o.raw; headers['content-type'] = o.ctype || 'application/octet-stream'; }
    const res = await fetch(base + url, {method, headers, body});
    const text = method === 'HEAD' ? '' : await res.text();
    const r = {status: res.status, headers: res.headers, text};
    try { r.json = text ? JSON.parse(text) : null; } catch (e) { r.json = null; }
    C.checkResponse(what, method, specPath, r);
    if (o.expect !== undefined)
      L.check([].concat(o.expect).includes(r.status), `${what}: ${[].concat(o.expect).join('|')}`, o.expect, [r.status, text.slice(0, 300)]);
    // A body the server took is one the spec takes; one marked badBody (the
    // server refuses its shape) is one the spec refuses too.
    if (o.body !== undefined && typeof o.body !== 'string' && (r.status < 300 || o.badBody))
      C.checkRequest(what, method, specPath, o.body, r.status < 300);
    return r;
  };
}

// An OCI image layout holding one layer with one file, as a tar.
function ociLayout(root) {
  const dir = path.join(root, 'oci'), blobs = path.join(dir, 'blobs/sha256');
  fs.mkdirSync(blobs, {recursive: true});
  fs.mkdirSync(path.join(root, 'layer'), {recursive: true});
  fs.writeFileSync(path.join(root, 'layer/hello.txt'), 'hello from an imported layer\n');
  execFileSync('tar', ['-C', path.join(root, 'layer'), '-cf', path.join(root, 'layer.tar'), 'hello.txt']);
  const blob = (buf) => {
    const h = crypto.createHash('sha256').update(buf).digest('hex');
    fs.writeFileSync(path.join(blobs, h), buf);
    return {digest: 'sha256:' + h, size: buf.length};
  };
  const layer = blob(fs.readFileSync(path.join(root, 'layer.tar')));
  const config = blob(Buffer.from(JSON.stringify({architecture: 'amd64', os: 'linux', config: {Env: ['A=1'], WorkingDir: '/'},
    rootfs: {type: 'layers', diff_ids: [layer.digest]}})));
  const manifest = blob(Buffer.from(JSON.stringify({schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: Object.assign({mediaType: 'application/vnd.oci.image.config.v1+json'}, config),
    layers: [Object.assign({mediaType: 'application/vnd.oci.image.layer.v1.tar'}, layer)]})));
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({imageLayoutVersion: '1.0.0'}));
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({schemaVersion: 2,
    manifests: [Object.assign({mediaType: 'application/vnd.oci.image.manifest.v1+json'}, manifest)]}));
  execFileSync('tar', ['-C', dir, '-cf', path.join(root, 'oci.tar'), 'oci-layout', 'index.json', 'blobs']);
  return fs.readFileSync(path.join(root, 'oci.tar'));
}

async function served(d) {
  const call = caller(d.base);
  let r = await call('the spec', 'GET', '/v1/openapi.json', {}, {expect: 200});
  L.check(r.text === C.SPEC_TEXT, 'GET /v1/openapi.json is docs/openapi.json byte for byte', C.SPEC_TEXT.length, r.text.length);
  L.eq(r.headers.get('content-type'), 'application/json', 'the spec: Content-Type application/json');
  const etag = r.headers.get('etag');
  L.check(/^"[0-9a-f]{32}"$/.test(etag || ''), 'the spec: a strong ETag', '"<32 hex>"', etag);
  r = await call('the spec, If-None-Match', 'GET', '/v1/openapi.json', {}, {headers: {'if-none-match': etag}, expect: 304});
  L.eq(r.headers.get('etag'), etag, '304 carries the ETag');
  await call('the spec, another ETag', 'GET', '/v1/openapi.json', {}, {headers: {'if-none-match': '"0000"'}, expect: 200});
  await call('healthz', 'GET', '/healthz', {}, {expect: 200});
}

async function usersAndSettings(d, call) {
  let r = await call('create alice', 'POST', '/v1/users', {}, {tok: d.admin, body: {name: 'alice'}, expect: 201});
  const alice = r.json.token;
  const bob = (await call('create bob', 'POST', '/v1/users', {}, {tok: d.admin, body: {name: 'bob'}, expect: 201})).json.token;
  await call('a taken name', 'POST', '/v1/users', {}, {tok: d.admin, body: {name: 'alice'}, expect: 409});
  await call('a bad name', 'POST', '/v1/users', {}, {tok: d.admin, body: {name: '-x'}, expect: 400, badBody: true});
  await call('an unknown field', 'POST', '/v1/users', {}, {tok: d.admin, body: {name: 'carol', admin: true}, expect: 400, badBody: true});
  await call('malformed JSON', 'POST', '/v1/users', {}, {tok: d.admin, body: '{"name":', expect: 400});
  await call('a user creating users', 'POST', '/v1/users', {}, {tok: alice, body: {name: 'dave'}, expect: 403});
  const erin = (await call('create erin', 'POST', '/v1/users', {}, {tok: d.admin, body: {name: 'erin'}, expect: 201})).json.token;
  await call('a user deleting users', 'DELETE', '/v1/users/{name}', {name: 'erin'}, {tok: alice, expect: 403});
  await call('delete erin', 'DELETE', '/v1/users/{name}', {name: 'erin'}, {tok: d.admin, expect: 204});
  await call('delete erin again', 'DELETE', '/v1/users/{name}', {name: 'erin'}, {tok: d.admin, expect: 404});
  L.eq((await L.http(d.base, 'GET', '/v1/sessions', erin)).status, 401, "a deleted user's token: 401");
  // The token cache runs on SQLite too (server.c): a known token is a hash
  // probe, not a store read that would wait on the put worker's commit.
  const tm0 = await L.metrics(d);
  for (let i = 0; i < 5; i++) L.eq((await L.http(d.base, 'GET', '/v1/sessions', alice)).status, 200, 'GET /v1/sessions as alice');
  const tm1 = await L.metrics(d);
  L.eq([tm1.cortex_auth_token_cache_hits_total - tm0.cortex_auth_token_cache_hits_total,
    tm1.cortex_auth_token_store_reads_total - tm0.cortex_auth_token_store_reads_total], [5, 0],
  "5 requests with a known token: [cache hits, store reads]");

  const kinds = [
    ['mcp', {type: 'stdio', command: 'node', args: ['srv.js'], env: {A: '1'}}, {type: 'ftp'}],
    ['secrets', {value: 'not-a-real-secret-1234', env: 'MY_TOKEN', broker: {hosts: ['api.example.com']}}, {value: 5}],
    ['plugins', {agents: {'a.md': '# agent'}, rules: {'r.md': 'be brief'}}, {agents: {'no-md': 'x'}}],
    ['ai-providers', {kind: 'anthropic', base_url: 'http://127.0.0.1:9', api_key: 'sk-x', model: 'm-1'}, {kind: 'openai', base_url: 'http://x', api_key: 'k'}]];
  for (const [kind, good, bad] of kinds) {
    const one = `/v1/settings/${kind}/{name}`;
    await call(`${kind}: create`, 'PUT', one, {name: 'one'}, {tok: alice, body: good, expect: 201});
    await call(`${kind}: replace`, 'PUT', one, {name: 'one'}, {tok: alice, body: good, expect: 200});
    await call(`${kind}: a bad body`, 'PUT', one, {name: 'two'}, {tok: alice, body: bad, expect: 400, badBody: true});
    await call(`${kind}: a bad name`, 'PUT', one, {name: '.x'}, {tok: alice, body: good, expect: 400});
    await call(`${kind}: list`, 'GET', `/v1/settings/${kind}`, {}, {tok: alice, expect: 200});
    await call(`${kind}: admin`, 'GET', `/v1/settings/${kind}`, {}, {tok: d.admin, expect: 403});
    await call(`${kind}: get`, 'GET', one, {name: 'one'}, {tok: alice, expect: 200});
    await call(`${kind}: get a missing one`, 'GET', one, {name: 'nope'}, {tok: alice, expect: 404});
    await call(`${kind}: delete`, 'DELETE', one, {name: 'one'}, {tok: alice, expect: 204});
    await call(`${kind}: delete again`, 'DELETE', one, {name: 'one'}, {tok: alice, expect: 404});
  }
  await call('user settings, never set', 'GET', '/v1/settings/user', {}, {tok: alice, expect: 200});
  await call('user settings: set', 'PUT', '/v1/settings/user', {}, {tok: alice, body: {claude_md: '# notes', permission_mode: 'default', env: {FOO: 'bar'}}, expect: 201});
  await call('user settings: replace', 'PUT', '/v1/settings/user', {}, {tok: alice, body: {claude_md: '# notes 2'}, expect: 200});
  await call('user settings: a bad mode', 'PUT', '/v1/settings/user', {}, {tok: alice, body: {permission_mode: 'yolo'}, expect: 400, badBody: true});
  await call('user settings', 'GET', '/v1/settings/user', {}, {tok: alice, expect: 200});
  await call('user settings: admin', 'GET', '/v1/settings/user', {}, {tok: d.admin, expect: 403});
  await call('network: the default', 'GET', '/v1/settings/network', {}, {tok: alice, expect: 200});
  await call('network: set', 'PUT', '/v1/settings/network', {}, {tok: alice, body: {mode: 'allowlist', allow: ['*.example.com', '10.0.0.0/8'], deny: []}, expect: 200});
  await call('network: a bad mode', 'PUT', '/v1/settings/network', {}, {tok: alice, body: {mode: 'sometimes'}, expect: 400, badBody: true});
  await call('network: no mode', 'PUT', '/v1/settings/network', {}, {tok: alice, body: {allow: []}, expect: 400, badBody: true});
  await call('network: the user\'s', 'GET', '/v1/settings/network', {}, {tok: alice, expect: 200});
  await call('network: back to the default', 'DELETE', '/v1/settings/network', {}, {tok: alice, expect: 204});
  await call('network: admin', 'DELETE', '/v1/settings/network', {}, {tok: d.admin, expect: 403});
  return {alice, bob};
}

// Exec over the WebSocket: every frame it sends, both ways, through the spec
// (checked with the rest at the end of stream); a refusal the server makes
// for a frame's shape is one the spec makes too.
async function execFrames(c, send, call, sid, alice) {
  const refused = (f, what) => L.check(!!C.errorsOf(C.schemaRef('Frame.Client'), f), `client frame ${what} is no Frame.Client`, 'invalid', null);
  const of = (id) => c.frames.filter(f => f.id === id);
  const end = (id) => c.waitFor(f => f.id === id && (f.type === 'cortex.exit' || f.type === 'cortex.error'), `the end of exec ${id}`, 60000);
  const out = (id, t = 'cortex.stdout') => of(id).filter(f => f.type === t).map(f => f.data).join('');
  // Output on both streams, an exit code.
  send({type: 'exec', id: 'e1', cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'], cwd: '/workspace', env: ['A=1'], timeout_s: 60}, 'exec');
  let x = await end('e1');
  L.check(x.type === 'cortex.exit' && x.code === 3 && out('e1') === 'out\n' && out('e1', 'cortex.stderr') === 'err\n' && of('e1')[0].type === 'cortex.exec_started',
    'exec: cortex.exec_started, cortex.stdout, cortex.stderr, cortex.exit code 3', 3, of('e1'));
  // stdin, base64 both ways.
  send({type: 'exec', id: 'cat', cmd: ['cat'], encoding: 'base64'}, 'exec (base64)');
  await c.waitFor(f => f.id === 'cat' && f.type === 'cortex.exec_started', 'cat started');
  send({type: 'stdin', id: 'cat', data: Buffer.from('hello\n').toString('base64')}, 'stdin');
  send({type: 'stdin', id: 'cat', eof: true}, 'stdin eof');
  x = await end('cat');
  L.check(x.code === 0 && Buffer.from(out('cat'), 'base64').toString() === 'hello\n', 'exec: stdin round trip (base64)', 'hello', of('cat'));
  // A pty, resized.
  send({type: 'exec', id: 'pty', cmd: ['sh', '-c', 'stty size; read x; stty size'], pty: {cols: 100, rows: 30}}, 'exec (pty)');
  await c.waitFor(f => f.id === 'pty' && f.type === 'cortex.stdout' && /30 100/.test(out('pty')), 'the first stty size');
  send({type: 'resize', id: 'pty', cols: 120, rows: 40}, 'resize');
  send({type: 'stdin', id: 'pty', data: 'go\r'}, 'stdin (pty)');
  x = await end('pty');
  L.check(x.code === 0 && /30 100[\s\S]*40 120/.test(out('pty')) && of('pty')[0].pty === true, 'exec: a pty, resized', '30 100 .. 40 120', out('pty'));
  send({type: 'exec', id: 'pty2', cmd: ['tty'], pty: true}, 'exec (pty: true)');
  x = await end('pty2');
  L.check(x.code === 0 && /\/dev\/pts\//.test(out('pty2')), 'exec: pty true', '/dev/pts/N', of('pty2'));
  // Cancelled.
  send({type: 'exec', id: 'sl', cmd: ['sleep', '931']}, 'exec (sleep)');
  await c.waitFor(f => f.id === 'sl' && f.type === 'cortex.exec_started', 'sleep started');
  send({type: 'exec_cancel', id: 'sl'}, 'exec_cancel');
  x = await end('sl');
  L.check(x.type === 'cortex.exit' && x.cancelled === true && x.code === 137 && x.signal === 'KILL', 'exec_cancel: cortex.exit cancelled, 137 KILL', 137, x);
  // Refused: cortex.error with the id.
  for (const [f, code, what] of [
    [{type: 'exec', id: 'b1', cmd: ['ls'], cwd: '/etc'}, 'bad_frame', 'a cwd outside'],
    [{type: 'exec', id: 'b2', cmd: ['ls'], bogus: 1}, 'bad_frame', 'an unknown member'],
    [{type: 'exec', id: 'b3', cmd: ['ls'], pty: {cols: 0}}, 'bad_frame', 'a pty of 0 cols'],
    [{type: 'exec', id: 'b4', cmd: ['-x']}, 'bad_frame', 'cmd[0] an option'],
    [{type: 'exec', id: 'b5', cmd: ['ls'], env: ['1X=y']}, 'bad_frame', 'a bad env name']]) {
    refused(f, what);
    c.send(f);
    x = await end(f.id);
    L.check(x.type === 'cortex.error' && x.code === code, `exec refused (${what}): cortex.error ${code} with its id`, code, x);
  }
  send({type: 'exec', id: 'nf', cmd: ['/no/such/program']}, 'exec (a missing program)');
  x = await end('nf');
  L.check(x.type === 'cortex.error' && x.code === 'exec_not_found', 'exec of a missing absolute path: cortex.error exec_not_found', 'exec_not_found', x);
  send({type: 'stdin', id: 'nobody', data: 'x'}, 'stdin (no such exec)');
  x = await c.waitFor(f => f.id === 'nobody', 'no_exec');
  L.eq(x.code, 'no_exec', 'stdin for no running command: cortex.error no_exec');
  send({type: 'resize', id: 'e1', cols: 80, rows: 24}, 'resize (ended)');
  x = await c.waitFor(f => f.id === 'e1' && f.type === 'cortex.error', 'no_exec for a resize');
  L.eq(x.code, 'no_exec', 'resize of an ended command: cortex.error no_exec');
  // The cap (exec.max_per_session 2 here): a third is refused, on the socket and by POST.
  for (const id of ['h1', 'h2']) send({type: 'exec', id, cmd: ['sleep', '933']}, 'exec (held)');
  await c.waitFor(f => f.id === 'h2' && f.type === 'cortex.exec_started', 'two held');
  send({type: 'exec', id: 'h3', cmd: ['true']}, 'exec (over the cap)');
  x = await end('h3');
  L.check(x.type === 'cortex.error' && x.code === 'too_many_execs', 'a third exec: cortex.error too_many_execs', 'too_many_execs', x);
  const r = await call('exec over the cap', 'POST', '/v1/sessions/{id}/exec', {id: sid}, {tok: alice, body: {cmd: ['true']}, expect: 429});
  L.eq(r.json && r.json.error.code, 'too_many_execs', 'POST exec over the cap: 429 too_many_execs');
  for (const id of ['h1', 'h2']) send({type: 'exec_cancel', id}, 'exec_cancel (held)');
  await end('h1');
  await end('h2');
  refused({type: 'exec_cancel'}, 'exec_cancel without an id');
  refused({type: 'resize', id: 'x', cols: 0, rows: 5}, 'resize of 0 cols');
  refused({type: 'exec', id: 'x'.repeat(65), cmd: ['ls']}, 'exec with a 65-byte id');
}

// The session WebSocket: frames both ways against the frame schemas.
async function stream(d, call, sid, alice, bob, c) {
  const clientOk = (f, what) => L.check(!C.errorsOf(C.schemaRef('Frame.Client'), f), `client frame ${what} is a Frame.Client`, 'valid', C.errorsOf(C.schemaRef('Frame.Client'), f));
  const send = (f, what) => { clientOk(f, what); c.send(f); };
  const n0 = c.frames.length;
  c.send('{"type":'); // not JSON
  c.send({type: 'dance'});
  L.check(!!C.errorsOf(C.schemaRef('Frame.Client'), {type: 'dance'}), 'an unknown frame type is no Frame.Client', 'invalid', null);
  await c.waitFor(f => c.frames.indexOf(f) >= n0 && f.type === 'cortex.error' && f.code === 'bad_frame' && /unknown frame type/.test(f.message), 'bad_frame for an unknown type');
  send({type: 'cancel'}, 'cancel');
  await c.waitFor(f => f.type === 'cortex.error' && f.code === 'no_turn', 'no_turn');
  send({type: 'watch', path: '/workspace'}, 'watch');
  await c.waitFor(f => f.type === 'cortex.fs' && f.event === 'watching', 'cortex.fs watching');
  const msg = {type: 'message', text: 'hello, spec'};
  clientOk(msg, 'message');
  const fr = await L.turn(c, msg.text);
  L.eq(fr[fr.length - 1].type, 'cortex.done', 'the turn ends with cortex.done');
  await call('PUT a file while watching', 'PUT', '/v1/sessions/{id}/files', {id: sid}, {tok: alice, query: 'path=/workspace/watched.txt', raw: 'x', expect: 201});
  await c.waitFor(f => f.type === 'cortex.fs' && f.path === '/workspace/watched.txt', 'cortex.fs for the PUT');
  // A second client replays the turn (a client is never given a frame twice).
  const c2 = L.connect(d.base, sid, alice, 'query');
  await c2.opened;
  const resume = {type: 'resume', after_seq: 0};
  clientOk(resume, 'resume');
  c2.send(resume);
  await c2.waitFor(f => f.type === 'cortex.done', 'the replayed turn');
  await c2.close();
  send({type: 'unwatch', path: '/workspace'}, 'unwatch');

  await execFrames(c, send, call, sid, alice);

  // Every frame the server sent is a Frame.Server; the main kinds were seen.
  const all = c.frames.concat(c2.frames);
  const bad = all.map(f => [f, C.errorsOf(C.schemaRef('Frame.Server'), f)]).filter(([, e]) => e);
  L.check(bad.length === 0, `all ${all.length} server frames match Frame.Server`, 0, bad.slice(0, 3).map(([f, e]) => [e, JSON.stringify(f).slice(0, 300)]));
  const kinds = new Set(all.map(f => f.type));
  for (const k of ['system', 'stream_event', 'assistant', 'result', 'cortex.done', 'cortex.error', 'cortex.fs',
    'cortex.exec_started', 'cortex.stdout', 'cortex.stderr', 'cortex.exit'])
    L.check(kinds.has(k), `a ${k} frame was seen and validated`, k, [...kinds]);
  const specFrames = C.SPEC.paths['/v1/sessions/{id}/ws'].get['x-websocket-frames'];
  const listed = (side) => specFrames[side].map(r => r.$ref.split('/').pop()).sort();
  L.eq(listed('clientToServer'), C.SPEC.components.schemas['Frame.Client'].oneOf.map(r => r.$ref.split('/').pop()).sort(),
    'x-websocket-frames lists every Frame.Client');
  L.eq(listed('serverToClient'), C.SPEC.components.schemas['Frame.Server'].anyOf.map(r => r.$ref.split('/').pop()).sort(),
    'x-websocket-frames lists every Frame.Server');

  // The upgrade's refusals are the operation's declared responses.
  const ws = C.SPEC.paths['/v1/sessions/{id}/ws'].get;
  for (const [what, tok, via, expect] of [['a bad token', 'cx_bad', 'header', 401], ['another user', bob, 'header', 404], ['?token=', alice, 'query', 0]]) {
    const k = L.connect(d.base, sid, tok, via);
    const err = await k.opened.then(() => null, e => e);
    if (!expect) {
      L.check(!err, 'the upgrade with ?token= opens', 'open', err && err.message);
      C.hits.get('GET /v1/sessions/{id}/ws') || C.hits.set('GET /v1/sessions/{id}/ws', new Set());
      C.hits.get('GET /v1/sessions/{id}/ws').add(101);
      await k.close();
      continue;
    }
    L.eq(err && err.status, expect, `an upgrade with ${what}: ${expect}`);
    C.hits.get('GET /v1/sessions/{id}/ws') || C.hits.set('GET /v1/sessions/{id}/ws', new Set());
    C.hits.get('GET /v1/sessions/{id}/ws').add(err && err.status);
    const r = C.deref(ws.responses[String(err && err.status)]);
    const e = r && C.errorsOf(r.content['application/json'].schema, err.json);
    L.check(r && !e, `the refused upgrade's body (${what}) matches the spec`, 'valid', e || 'undeclared');
  }
  await call('the stream without an upgrade', 'GET', '/v1/sessions/{id}/ws', {id: sid}, {tok: alice, expect: 400});
}

async function files(call, sid, alice) {
  const F = '/v1/sessions/{id}/files', id = {id: sid}, t = alice;
  await call('files: write', 'PUT', F, id, {tok: t, query: 'path=/workspace/d/a.txt', raw: 'hello', expect: 201});
  await call('files: replace', 'PUT', F, id, {tok: t, query: 'path=/workspace/d/a.txt', raw: 'hello world', expect: 200});
  await call('files: read', 'GET', F, id, {tok: t, query: 'path=/workspace/d/a.txt', expect: 200});
  await call('files: a range', 'GET', F, id, {tok: t, query: 'path=/workspace/d/a.txt', headers: {range: 'bytes=0-4'}, expect: 206});
  await call('files: a range past the end', 'GET', F, id, {tok: t, query: 'path=/workspace/d/a.txt', headers: {range: 'bytes=100-'}, expect: 416});
  await call('files: list', 'GET', F, id, {tok: t, query: 'path=/workspace/d', expect: 200});
  await call('files: missing', 'GET', F, id, {tok: t, query: 'path=/workspace/none', expect: 404});
  await call('files: an escape', 'GET', F, id, {tok: t, query: 'path=/workspace/../etc', expect: 400});
  await call('files: no path', 'GET', F, id, {tok: t, expect: 400});
  await call('files: write over a dir', 'PUT', F, id, {tok: t, query: 'path=/workspace/d', raw: 'x', expect: 409});
  await call('files: write outside', 'PUT', F, id, {tok: t, query: 'path=/etc/passwd', raw: 'x', expect: 400});
  await call('files: a non-empty dir', 'DELETE', F, id, {tok: t, query: 'path=/workspace/d', expect: 409});
  await call('files: the root', 'DELETE', F, id, {tok: t, query: 'path=/workspace', expect: 400});
  await call('files: recursive', 'DELETE', F, id, {tok: t, query: 'path=/workspace/d&recursive=1', expect: 204});
}

async function sessionRoutes(d, call, sid, alice, bob) {
  const id = {id: sid};
  await call('get', 'GET', '/v1/sessions/{id}', id, {tok: alice, expect: 200});
  await call('another user\'s', 'GET', '/v1/sessions/{id}', id, {tok: bob, expect: 404});
  await call('list', 'GET', '/v1/sessions', {}, {tok: alice, expect: 200});
  await call('list as admin', 'GET', '/v1/sessions', {}, {tok: d.admin, expect: 403});
  await call('messages', 'GET', '/v1/sessions/{id}/messages', id, {tok: alice, query: 'limit=10', expect: 200});
  await call('messages, a bad limit', 'GET', '/v1/sessions/{id}/messages', id, {tok: alice, query: 'limit=0', expect: 400});
  await call('session network', 'GET', '/v1/sessions/{id}/network', id, {tok: alice, expect: 200});
  await call('session network: set', 'PUT', '/v1/sessions/{id}/network', id, {tok: alice, body: {mode: 'open'}, expect: 200});
  await call('session network: a bad entry', 'PUT', '/v1/sessions/{id}/network', id, {tok: alice, body: {mode: 'allowlist', allow: ['bad host!']}, expect: 400});
  await call('session network: its own', 'GET', '/v1/sessions/{id}/network', id, {tok: alice, expect: 200});
  await call('session network: drop it', 'DELETE', '/v1/sessions/{id}/network', id, {tok: alice, expect: 204});
  await call('session network: another user', 'DELETE', '/v1/sessions/{id}/network', id, {tok: bob, expect: 404});
  await call('egress', 'GET', '/v1/sessions/{id}/egress', id, {tok: alice, query: 'limit=5', expect: 200});
  await call('egress, a bad limit', 'GET', '/v1/sessions/{id}/egress', id, {tok: alice, query: 'limit=x', expect: 400});
  const E = '/v1/sessions/{id}/exec';
  let r = await call('exec', 'POST', E, id, {tok: alice, body: {cmd: ['sh', '-c', 'cat; echo err >&2; exit 4'], stdin: 'in\n', cwd: '/home/agent', env: ['B=2'], timeout_s: 30}, expect: 200});
  L.check(r.json && r.json.code === 4 && r.json.stdout === 'in\n' && r.json.stderr === 'err\n', 'POST exec: code, stdout, stderr', 4, r.json);
  r = await call('exec (base64, truncated)', 'POST', E, id, {tok: alice, body: {cmd: ['head', '-c', '5000', '/dev/zero'], encoding: 'base64'}, expect: 200});
  L.check(r.json && r.json.truncated === true && Buffer.from(r.json.stdout, 'base64').length === 1024, 'POST exec: stdout capped at exec.max_output_kb (1), truncated', 1024, r.json && r.json.truncated);
  r = await call('exec, timed out', 'POST', E, id, {tok: alice, body: {cmd: ['sleep', '932'], timeout_s: 1}, expect: 200});
  L.check(r.json && r.json.timed_out === true && r.json.code === 137 && r.json.signal === 'KILL', 'POST exec: timed out, 137 KILL', 137, r.json);
  await call('exec, no cmd', 'POST', E, id, {tok: alice, body: {cwd: '/workspace'}, expect: 400, badBody: true});
  await call('exec, pty (WebSocket only)', 'POST', E, id, {tok: alice, body: {cmd: ['ls'], pty: true}, expect: 400, badBody: true});
  await call('exec, a cwd outside', 'POST', E, id, {tok: alice, body: {cmd: ['ls'], cwd: '/tmp'}, expect: 400, badBody: true});
  await call('exec, malformed JSON', 'POST', E, id, {tok: alice, body: '{"cmd":[', expect: 400});
  r = await call('exec, a missing program', 'POST', E, id, {tok: alice, body: {cmd: ['/no/such/program']}, expect: 400});
  L.eq(r.json && r.json.error.code, 'exec_not_found', 'POST exec of a missing absolute path: 400 exec_not_found');
  await call('exec, another user\'s session', 'POST', E, id, {tok: bob, body: {cmd: ['true']}, expect: 404});
}

async function preview(d, call, sid, alice, c) {
  const src = fs.readFileSync(path.join(__dirname, 'preview_server.js')).toString('base64');
  const out = await L.runInside(c, `echo ${src} | base64 -d > /tmp/pv.js && (setsid nohup node /tmp/pv.js ${PORT} > /tmp/pv.log 2>&1 &) ; ` +
    'for i in $(seq 50); do grep -q listening /tmp/pv.log && break; sleep 0.1; done; cat /tmp/pv.log');
  L.check(/listening/.test(out), 'the preview server runs inside', 'listening', out);
  const P = '/v1/sessions/{id}/ports/{port}/{path}';
  for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'])
    await call(`preview ${m}`, m, P, {id: sid, port: PORT, path: 'info'}, Object.assign({tok: alice, expect: 200}, ['POST', 'PUT', 'PATCH'].includes(m) ? {raw: 'abc', ctype: 'text/plain'} : {}));
  await call('preview, a bad port', 'GET', P, {id: sid, port: 70000, path: 'x'}, {tok: alice, expect: 400});
  await call('preview, nothing listens', 'GET', P, {id: sid, port: 9, path: ''}, {tok: alice, expect: 502});
  await call('preview, nothing listens (POST)', 'POST', P, {id: sid, port: 9, path: ''}, {tok: alice, raw: 'x', expect: 502});
  for (const m of ['PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'])
    await call(`preview ${m}, a bad port`, m, P, {id: sid, port: 0, path: ''}, {tok: alice, expect: 400});
}

async function control(call, sid, alice) {
  const id = {id: sid};
  await call('pause', 'POST', '/v1/sessions/{id}/pause', id, {tok: alice, expect: 202});
  await L.until(async () => (await call('poll', 'GET', '/v1/sessions/{id}', id, {tok: alice})).json.state === 'paused', 'paused', 30000);
  await call('wake a paused one', 'POST', '/v1/sessions/{id}/wake', id, {tok: alice, expect: 202});
  await L.until(async () => (await call('poll', 'GET', '/v1/sessions/{id}', id, {tok: alice})).json.state === 'ready', 'ready again', 60000);
  await call('sleep', 'POST', '/v1/sessions/{id}/sleep', id, {tok: alice, expect: 202});
  await L.until(async () => (await call('poll', 'GET', '/v1/sessions/{id}', id, {tok: alice})).json.state === 'sleeping', 'sleeping', 30000);
  await call('pause while sleeping', 'POST', '/v1/sessions/{id}/pause', id, {tok: alice, expect: 409});
  await call('files while sleeping', 'GET', '/v1/sessions/{id}/files', id, {tok: alice, query: 'path=/workspace', expect: 200});
  await call('wake', 'POST', '/v1/sessions/{id}/wake', id, {tok: alice, expect: 202});
  const r = await call('wake while waking', 'POST', '/v1/sessions/{id}/wake', id, {tok: alice});
  L.check([202, 409].includes(r.status), 'a second wake: 202 or 409 busy', '202|409', r.status);
  await call('sleep with a bad token', 'POST', '/v1/sessions/{id}/sleep', id, {tok: 'cx_' + '0'.repeat(64), expect: 401});
}

async function metrics(d, call, alice) {
  await call('metrics', 'GET', '/metrics', {}, {tok: d.admin, expect: 200});
  await call('metrics as a user', 'GET', '/metrics', {}, {tok: alice, expect: 403});
  const r = await call('turn records', 'GET', '/v1/metrics/turns', {}, {tok: alice, query: 'limit=50', expect: 200});
  L.check(Array.isArray(r.json) && r.json.length >= 1, 'turn records: the turn is there', '>= 1', r.json && r.json.length);
  await call('turn records (admin)', 'GET', '/v1/metrics/turns', {}, {tok: d.admin, query: 'since=0', expect: 200});
  await call('turn records, a bad limit', 'GET', '/v1/metrics/turns', {}, {tok: alice, query: 'limit=0', expect: 400});
  await call('summary', 'GET', '/v1/metrics/summary', {}, {tok: alice, expect: 200});
  await call('summary, a bad cursor', 'GET', '/v1/metrics/summary', {}, {tok: alice, query: 'after=nope', expect: 400});
}

async function images(d, call, alice, root) {
  const nonce = crypto.randomBytes(6).toString('hex');
  const A = {tok: d.admin};
  await call('images', 'GET', '/v1/images', {}, {tok: alice, expect: 200});
  await call('an image name that is not one', 'GET', '/v1/images/{name}', {name: 'Bad_Name'}, {tok: alice, expect: 400});
  await call('an unknown image', 'GET', '/v1/images/{name}', {name: 'none-' + nonce}, {tok: alice, expect: 404});
  await call('the log of an unknown image', 'GET', '/v1/images/{name}/log', {name: 'none-' + nonce}, {tok: alice, expect: 404});
  const ctxDir = path.join(root, 'ctx');
  fs.mkdirSync(ctxDir, {recursive: true});
  fs.writeFileSync(path.join(ctxDir, 'Dockerfile'), 'FROM scratch\nCOPY file.txt /file.txt\n');
  fs.writeFileSync(path.join(ctxDir, 'file.txt'), 'openapi ' + nonce + '\n');
  execFileSync('tar', ['-C', ctxDir, '-cf', path.join(root, 'ctx.tar'), 'Dockerfile', 'file.txt']);
  const ctx = fs.readFileSync(path.join(root, 'ctx.tar'));
  const name = 'oa-' + nonce, imported = 'oa-imp-' + nonce;
  await call('build as a user', 'POST', '/v1/images/{name}/build', {name}, {tok: alice, raw: ctx, ctype: 'application/x-tar', expect: 403});
  await call('build from a non-tar', 'POST', '/v1/images/{name}/build', {name}, Object.assign({raw: 'not a tar at all', ctype: 'application/x-tar', expect: 400}, A));
  await call('build', 'POST', '/v1/images/{name}/build', {name}, Object.assign({raw: ctx, ctype: 'application/x-tar', expect: 202}, A));
  const img = await L.poll(async () => {
    const r = await call('the image while it builds', 'GET', '/v1/images/{name}', {name}, {tok: alice});
    return r.json && r.json.build && r.json.build.state !== 'running' ? r.json : null;
  }, 240000);
  L.eq(img && img.build.state, 'done', 'the build is done');
  await call('the build log', 'GET', '/v1/images/{name}/log', {name}, {tok: alice, expect: 200});
  await call('import garbage', 'POST', '/v1/images/{name}/import', {name: imported}, Object.assign({raw: 'garbage', ctype: 'application/x-tar', expect: 400}, A));
  await call('import an OCI layout', 'POST', '/v1/images/{name}/import', {name: imported}, Object.assign({raw: ociLayout(root), ctype: 'application/x-tar', expect: 201}, A));
  await call('import as a user', 'POST', '/v1/images/{name}/import', {name: imported}, {tok: alice, raw: 'x', ctype: 'application/x-tar', expect: 403});
  await call('images with ours', 'GET', '/v1/images', {}, {tok: alice, expect: 200});
  await call('delete as a user', 'DELETE', '/v1/images/{name}', {name}, {tok: alice, expect: 403});
  await call('delete', 'DELETE', '/v1/images/{name}', {name}, Object.assign({expect: 204}, A));
  await call('delete the imported', 'DELETE', '/v1/images/{name}', {name: imported}, Object.assign({expect: 204}, A));
  await call('delete again', 'DELETE', '/v1/images/{name}', {name: imported}, Object.assign({expect: 404}, A));
}

// Every operation with a bad token: 401, declared; every method a path does
// not list: 405 as components.responses.MethodNotAllowed.
async function sweeps(d, call, sid, alice) {
  const params = {id: sid, name: 'x1', port: PORT, path: 'info'};
  for (const {path: p, method, op} of C.operations()) {
    if (op.security && !op.security.length) continue; // no auth
    await call(`${method.toUpperCase()} ${p} with a bad token`, method.toUpperCase(), p, params, {tok: 'cx_' + 'f'.repeat(64), expect: 401});
  }
  const na = C.deref({$ref: '#/components/responses/MethodNotAllowed'});
  for (const [p, item] of Object.entries(C.SPEC.paths)) {
    const m = ['GET', 'POST', 'PUT', 'DELETE'].find(x => !item[x.toLowerCase()]);
    if (!m) continue;
    const tok = /^\/(v1\/images|v1\/users|metrics)/.test(p) ? d.admin : alice;
    const url = p.replace(/\{(\w+)\}/g, (_, k) => params[k]);
    const res = await fetch(d.base + url, {method: m, headers: {authorization: 'Bearer ' + tok}});
    const r = {status: res.status, headers: res.headers, text: await res.text()};
    L.eq(r.status, 405, `${m} ${p} (not in the spec): 405`);
    C.checkAgainst(`${m} ${p}`, na, r, m);
  }
  const nf = C.deref({$ref: '#/components/responses/NotFound'});
  for (const p of ['/v1/nothing', `/v1/sessions/${sid}/nothing`, '/v1/settings/nothing', '/v1/images/x1/nothing']) {
    const res = await fetch(d.base + p, {headers: {authorization: 'Bearer ' + (p.startsWith('/v1/images') ? d.admin : alice)}});
    const r = {status: res.status, headers: res.headers, text: await res.text()};
    L.eq(r.status, 404, `${p} (not in the spec): 404`);
    C.checkAgainst(p, nf, r, 'GET');
  }
}

function coverage() {
  for (const {key, op} of C.operations()) {
    const seen = [...(C.hits.get(key) || [])];
    const okSeen = seen.some(s => s < 400), errSeen = seen.some(s => s >= 400 && s < 500);
    L.check(okSeen && (errSeen || (op.security && !op.security.length)), `${key} answered with a success and a 4xx`, 'both', seen);
  }
  const spec = new Set(Object.keys(C.SPEC.paths));
  const missing = C.routesInSources().filter(p => !spec.has(p));
  L.eq(missing, [], 'every route family of cortexd\'s dispatch code is a path of docs/openapi.json');
  L.check(C.routesInSources().length >= 25, 'the source scan finds the routes (guards the scan itself)', '>= 25', C.routesInSources().length);
}

(async () => {
  C.selfCheck();
  const model = await L.startModelServer();
  const root = L.tmpdir('openapi');
  const cfgFile = path.join(root, 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify({sandbox: {net_isolated: true}, exec: {max_output_kb: 1, max_per_session: 2}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const call = caller(d.base);
  await served(d);
  const {alice, bob} = await usersAndSettings(d, call);
  await call('alice\'s provider', 'PUT', '/v1/settings/ai-providers/{name}', {name: 'default'}, {tok: alice, body: {kind: 'anthropic', base_url: model.url, api_key: 'sk-ant-openapi'}, expect: 201});

  await call('create, a bad surface', 'POST', '/v1/sessions', {}, {tok: alice, body: {surface: 'video'}, expect: 400, badBody: true});
  await call('create, a bad limit', 'POST', '/v1/sessions', {}, {tok: alice, body: {limits: {disk_mb: 1}}, expect: 400, badBody: true});
  await call('create as admin', 'POST', '/v1/sessions', {}, {tok: d.admin, body: {}, expect: 403});
  const sid = (await call('create', 'POST', '/v1/sessions', {}, {tok: alice, body: {surface: 'chat', idle_sleep_s: 600, limits: {cpu_weight: 100}}, expect: 201})).json.id;
  await L.until(async () => (await call('poll', 'GET', '/v1/sessions/{id}', {id: sid}, {tok: alice})).json.agent === 'hot', 'agent hot', 90000);
  const c = L.connect(d.base, sid, alice);
  await c.opened;
  C.hits.get('GET /v1/sessions/{id}/ws') || C.hits.set('GET /v1/sessions/{id}/ws', new Set([101]));

  await stream(d, call, sid, alice, bob, c);
  await files(call, sid, alice);
  await sessionRoutes(d, call, sid, alice, bob);
  await preview(d, call, sid, alice, c);
  await metrics(d, call, alice);
  await sweeps(d, call, sid, alice);
  await c.close();
  await control(call, sid, alice);
  await images(d, call, alice, root);
  await call('delete the session', 'DELETE', '/v1/sessions/{id}', {id: sid}, {tok: alice, expect: 204});
  await call('delete it again', 'DELETE', '/v1/sessions/{id}', {id: sid}, {tok: alice, expect: 404});
  coverage();
  await L.until(() => !fs.existsSync(path.join(d.dataDir, 'sessions', sid)), 'the deleted session\'s dir gone', 30000);
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  const left = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l.includes(d.dataDir + '/'));
  L.eq(left, [], 'nothing of the daemon is left mounted');
  L.done();
})();

// The checking half of e2e.openapi: docs/openapi.json loaded once, real
// responses and WebSocket frames validated against it with a real JSON Schema
// 2020-12 validator (ajv), every hit recorded per operation, and the route
// families cortexd's dispatch code names, read from its sources.
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv2020 = require('ajv/dist/2020');
const addFormats = require('ajv-formats');
const L = require('./lib');

const REPO = path.resolve(process.env.TESTS_DIR, '..');
const SPEC_FILE = path.join(REPO, 'docs/openapi.json');
const SPEC_TEXT = fs.readFileSync(SPEC_FILE, 'utf8');
const SPEC = JSON.parse(SPEC_TEXT);

// Schemas live under "cortex#/$defs/..." in ajv: the spec's own refs are rewritten.
function rewrite(v) {
  if (Array.isArray(v)) return v.map(rewrite);
  if (!v || typeof v !== 'object') return v;
  const o = {};
  for (const [k, x] of Object.entries(v))
    o[k] = k === '$ref' && typeof x === 'string' && x.startsWith('#/components/schemas/') ? 'cortex#/$defs/' + x.slice(21) : rewrite(x);
  return o;
}
const ajv = new Ajv2020({strict: false, allErrors: true});
addFormats(ajv);
ajv.addFormat('binary', true); // OpenAPI's marker for raw bodies (never validated as JSON)
ajv.addSchema({$id: 'cortex', $defs: rewrite(SPEC.components.schemas)});
const compiled = new Map();
function validator(schema) {
  const key = JSON.stringify(schema);
  if (!compiled.has(key)) compiled.set(key, ajv.compile(rewrite(schema)));
  return compiled.get(key);
}
// 0 errors = valid; else the errors (a short text).
function errorsOf(schema, value) {
  const v = validator(schema);
  return v(value) ? null : ajv.errorsText(v.errors, {separator: '; '}).slice(0, 600);
}
const schemaRef = (name) => ({$ref: '#/components/schemas/' + name});

function pointer(ref) {
  if (!ref.startsWith('#/')) throw new Error('not a local ref: ' + ref);
  return ref.slice(2).split('/').map(s => s.replace(/~1/g, '/').replace(/~0/g, '~')).reduce((o, k) => (o === undefined ? o : o[k]), SPEC);
}
const deref = (o) => (o && o.$ref ? pointer(o.$ref) : o);

// The spec holds together: every $ref resolves, operation ids are unique.
function selfCheck() {
  const bad = [], ids = new Set(), dup = [];
  (function walk(v, at) {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, at + '/' + i));
    if (!v || typeof v !== 'object') return;
    if (typeof v.$ref === 'string' && pointer(v.$ref) === undefined) bad.push(at + ' -> ' + v.$ref);
    for (const [k, x] of Object.entries(v)) walk(x, at + '/' + k);
  })(SPEC, '#');
  for (const [p, item] of Object.entries(SPEC.paths))
    for (const [m, op] of Object.entries(item)) {
      if (ids.has(op.operationId)) dup.push(op.operationId);
      ids.add(op.operationId);
      if (!op.responses || !Object.keys(op.responses).length) bad.push(`${m} ${p}: no responses`);
    }
  // Every schema compiles under a strict validator (a misspelt keyword or
  // a bad "type" is an error there, not silently ignored).
  // strictTuples off: ExecCmd constrains cmd[0] (prefixItems) and leaves the rest open, as 2020-12 allows.
  const strict = new Ajv2020({strict: true, strictTypes: false, strictRequired: false, strictTuples: false});
  addFormats(strict);
  strict.addFormat('binary', true);
  strict.addSchema({$id: 'cortex', $defs: rewrite(SPEC.components.schemas)});
  const media = [];
  (function walk(v, at) {
    if (!v || typeof v !== 'object') return;
    if (at.endsWith('/content')) for (const [t, m] of Object.entries(v)) if (m.schema) media.push([at + '/' + t, m.schema]);
    for (const [k, x] of Object.entries(v)) if (k !== 'schemas') walk(x, at + '/' + k);
  })({paths: SPEC.paths, responses: SPEC.components.responses}, '#');
  const broken = [];
  for (const [at, sch] of Object.keys(SPEC.components.schemas).map(k => ['#/components/schemas/' + k, schemaRef(k)]).concat(media))
    try { strict.compile(rewrite(sch)); } catch (e) { broken.push(at + ': ' + e.message); }
  L.eq(broken, [], `all ${Object.keys(SPEC.components.schemas).length} component schemas and ${media.length} media schemas compile (strict JSON Schema 2020-12)`);
  L.eq(SPEC.openapi, '3.1.0', 'the spec is OpenAPI 3.1.0');
  L.eq(bad, [], 'every $ref of the spec resolves, every operation has responses');
  L.eq(dup, [], 'operation ids are unique');
}

// ---- operations and hits ----
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch'];
function operations() {
  const out = [];
  for (const [p, item] of Object.entries(SPEC.paths))
    for (const m of METHODS) if (item[m]) out.push({path: p, method: m, op: item[m], key: `${m.toUpperCase()} ${p}`});
  return out;
}
const hits = new Map(); // "GET /path" -> Set of statuses
function hit(key, status) {
  if (!hits.has(key)) hits.set(key, new Set());
  hits.get(key).add(status);
}

// Check one real response against the operation: the status is declared, the
// content type is one declared for it, a JSON body matches its schema, the
// declared required headers are there.  res: {status, headers, text}.
function checkResponse(what, method, specPath, res) {
  const item = SPEC.paths[specPath];
  const op = item && item[method.toLowerCase()];
  if (!op) {
    L.check(false, `${what}: ${method} ${specPath} is in the spec`, 'an operation', 'none');
    return;
  }
  hit(`${method.toUpperCase()} ${specPath}`, res.status);
  const declared = op.responses[String(res.status)] || op.responses.default;
  if (!declared) {
    L.check(false, `${what}: status ${res.status} is declared for ${method} ${specPath}`, Object.keys(op.responses), [res.status, res.text.slice(0, 300)]);
    return;
  }
  checkAgainst(what, deref(declared), res, method);
}

function checkAgainst(what, r, res, method) {
  for (const [h, spec] of Object.entries(r.headers || {}))
    if (spec.required) L.check(res.headers.get(h) !== null, `${what}: header ${h}`, 'present', null);
  if (!r.content || method.toUpperCase() === 'HEAD') {
    if (!r.content && res.status !== 101 && !/inside server/.test(r.description || ''))
      L.check(res.text === '', `${what}: ${res.status} has no body`, '', res.text.slice(0, 200));
    else
      console.log(`ok   ${what}: ${res.status} declared`);
    return;
  }
  const ctype = (res.headers.get('content-type') || '').split(';')[0].trim();
  const media = r.content[ctype];
  if (!media) {
    L.check(false, `${what}: content type ${ctype} declared`, Object.keys(r.content), ctype);
    return;
  }
  if (ctype !== 'application/json') {
    console.log(`ok   ${what}: ${res.status} ${ctype}`);
    return;
  }
  let body;
  try { body = JSON.parse(res.text); } catch (e) {
    L.check(false, `${what}: the body is JSON`, 'JSON', res.text.slice(0, 200));
    return;
  }
  const errs = errorsOf(media.schema, body);
  L.check(!errs, `${what}: ${res.status} body matches the spec`, 'valid', errs && [errs, JSON.stringify(body).slice(0, 400)]);
}

// A request body the server took (or refused for a schema reason) is one the
// spec's requestBody takes (or refuses).
function checkRequest(what, method, specPath, body, accepted) {
  const op = SPEC.paths[specPath][method.toLowerCase()];
  const media = op.requestBody && op.requestBody.content['application/json'];
  if (!media) return;
  const errs = errorsOf(media.schema, body);
  L.check(accepted ? !errs : !!errs, `${what}: the spec's request schema ${accepted ? 'accepts' : 'refuses'} it`, accepted ? 'valid' : 'invalid', errs);
}

// ---- the routes cortexd's sources name ----
// Every family the dispatch code tells apart, as spec paths: the literal
// paths in api.c and routes_metrics.c, the session sub-routes of
// session_route, the settings kinds (the kinds[] table and the fixed ones),
// the image sub-routes, the preview ports.  Each must be a path of the spec.
function routesInSources() {
  const src = (f) => fs.readFileSync(path.join(REPO, 'cortexd/edge', f), 'utf8');
  const out = new Set();
  const api = src('api.c') + src('routes_metrics.c');
  for (const m of api.matchAll(/str(?:n)?cmp\(p, "(\/[^"]*)"/g)) out.add(m[1].replace(/\/$/, ''));
  const sess = api.slice(api.indexOf('static void session_route'), api.indexOf('void api_handle'));
  for (const m of sess.matchAll(/strcmp\(sub, "([a-z_-]+)"\)/g)) out.add('/v1/sessions/{id}/' + m[1]);
  if (/strcmp\(m, "GET"\)\)\s*api_reply\(resp, 200, session_to_json/.test(sess)) out.add('/v1/sessions/{id}');
  const set = src('settings.c');
  const table = set.slice(set.indexOf('static const struct kind kinds[]'));
  for (const m of table.slice(0, table.indexOf('};')).matchAll(/\{"([a-z-]+)", SET_MAX_/g)) {
    out.add('/v1/settings/' + m[1]);
    out.add('/v1/settings/' + m[1] + '/{name}');
  }
  for (const m of set.matchAll(/klen == \d+ && !strncmp\(rest, "([a-z-]+)"/g)) out.add('/v1/settings/' + m[1]);
  const img = src('images.c');
  if (/get_image\(d, name, resp\)/.test(img)) out.add('/v1/images/{name}');
  for (const m of img.matchAll(/strcmp\(sub, "(\/[a-z]+)"\)/g)) out.add('/v1/images/{name}' + m[1]);
  if (/"\/ports"/.test(src('preview.c'))) out.add('/v1/sessions/{id}/ports/{port}/{path}');
  return [...out].map(p => p === '/v1/sessions/' ? '/v1/sessions' : p === '/v1/images/' ? '/v1/images' : p)
    .filter(p => p !== '/v1/metrics' && p !== '/v1/settings');
}

module.exports = {SPEC, SPEC_TEXT, SPEC_FILE, errorsOf, schemaRef, deref, selfCheck, operations, hits, checkResponse, checkAgainst, checkRequest, routesInSources};

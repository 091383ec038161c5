// cortexctl against a real cortexd: every command, its output and exit status
// (0 on 2xx, 1 on an HTTP error, 2 on a usage or transport error), and the
// help printed from the command table.
'use strict';
const {spawn} = require('child_process');
const L = require('./lib');

const CTL = process.env.CORTEXCTL;
if (!CTL) { console.error('CORTEXCTL is not set'); process.exit(2); }

// Run cortexctl; resolve with its exit code and output.  env replaces
// CORTEX_URL/CORTEX_TOKEN so the caller's environment cannot leak in.
function ctl(args, env = {}) {
  return new Promise((resolve, reject) => {
    const e = Object.assign({}, process.env);
    delete e.CORTEX_URL;
    delete e.CORTEX_TOKEN;
    const p = spawn(CTL, args, {env: Object.assign(e, env), stdio: ['ignore', 'pipe', 'pipe']});
    let stdout = '', stderr = '';
    p.stdout.on('data', d => { stdout += d; });
    p.stderr.on('data', d => { stderr += d; });
    p.on('error', reject);
    p.on('close', code => resolve({code, stdout, stderr}));
  });
}
const json = (s) => { try { return JSON.parse(s); } catch (e) { return {unparsed: s}; } };

const COMMANDS = ['health', 'user create NAME', 'session create [chat|voice]', 'session list', 'session get ID',
  'session delete ID', 'session sleep ID', 'session wake ID', 'session messages ID',
  'image list', 'image get NAME', 'image build NAME CONTEXT.tar', 'image log NAME', 'image import NAME IMAGE.tar',
  'image delete NAME', 'files ls ID PATH', 'files get ID PATH', 'files put ID PATH FILE', 'files rm ID PATH [-r]'];
// the image commands run against a real build in images.test.js

(async () => {
  // ---- help and usage, no daemon needed
  let r = await ctl(['--help']);
  L.eq([r.code, r.stderr], [0, ''], '--help: exit 0, nothing on stderr');
  L.eq(COMMANDS.filter(c => !r.stdout.includes(c)), [], '--help lists every command with its operands');
  r = await ctl(['session', 'get', '--help']);
  L.eq([r.code, r.stdout.split('\n')[0]], [0, 'usage: cortexctl [--url URL] [--token TOKEN] session get ID'], 'COMMAND --help: its usage line');
  r = await ctl(['session', '--help']);
  L.eq([r.code, COMMANDS.filter(c => c.startsWith('session ') && !r.stdout.includes(c))], [0, []], 'session --help lists the session commands');
  for (const args of [['bogus'], ['session', 'bogus', 'x'], ['user'], []]) {
    r = await ctl(args);
    L.check(r.code === 2 && r.stdout === '' && r.stderr.includes('usage: cortexctl'), `"${args.join(' ')}": usage on stderr, exit 2`,
      [2, '', 'usage'], [r.code, r.stdout, r.stderr.slice(0, 200)]);
  }
  r = await ctl(['bogus']);
  L.check(r.stderr.includes("unknown command 'bogus'"), 'an unknown command is named', "unknown command 'bogus'", r.stderr.slice(0, 200));
  for (const args of [['session', 'get'], ['user', 'create'], ['session', 'get', 'a/b'], ['session', 'get', 's'.repeat(64)],
    ['--url'], ['--nope', 'x', 'health']]) {
    r = await ctl(args);
    L.eq([r.code, r.stdout], [2, ''], `"${args.join(' ').slice(0, 40)}": exit 2, nothing sent or printed`);
  }
  r = await ctl(['--url', 'http://127.0.0.1:9', 'health']);
  L.check(r.code === 2 && r.stderr.includes('GET http://127.0.0.1:9/healthz'), 'connection refused: exit 2, the request named on stderr',
    [2, 'GET http://127.0.0.1:9/healthz'], [r.code, r.stderr]);

  // ---- against cortexd
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const at = {CORTEX_URL: d.base};
  r = await ctl(['health'], at);
  L.eq([r.code, r.stdout], [0, (await L.http(d.base, 'GET', '/healthz')).text + '\n'], 'health: the body and a newline, exit 0');
  r = await ctl(['--url', d.base, 'health']);
  L.eq(r.code, 0, '--url works as CORTEX_URL does');

  r = await ctl(['--token', d.admin, 'user', 'create', 'alice'], at);
  const alice = json(r.stdout).token;
  L.check(r.code === 0 && /^cx_[0-9a-f]{64}$/.test(alice || ''), 'user create prints the new token', 'cx_<64 hex>', [r.code, r.stdout]);
  r = await ctl(['user', 'create', 'alice'], Object.assign({CORTEX_TOKEN: d.admin}, at));
  L.check(r.code === 1 && json(r.stdout).error, 'a duplicate user: the JSON error printed, exit 1', [1, 'error'], [r.code, r.stdout]);
  r = await ctl(['session', 'list'], at);
  L.eq(r.code, 1, 'no token: exit 1');

  const as = Object.assign({CORTEX_TOKEN: alice}, at);
  r = await ctl(['session', 'list'], as);
  L.eq([r.code, r.stdout], [0, '[]\n'], 'session list: none yet');
  r = await ctl(['session', 'create'], as);
  const s1 = json(r.stdout);
  L.eq([r.code, s1.surface], [0, 'chat'], 'session create: chat by default');
  r = await ctl(['session', 'create', 'voice'], as);
  const s2 = json(r.stdout);
  L.eq([r.code, s2.surface], [0, 'voice'], 'session create voice');
  r = await ctl(['session', 'list'], as);
  L.eq([r.code, json(r.stdout).map(x => x.id).sort()], [0, [s1.id, s2.id].sort()], 'session list: both');
  r = await ctl(['session', 'get', s1.id], as);
  L.eq([r.code, json(r.stdout).id], [0, s1.id], 'session get');
  r = await ctl(['session', 'get', 's_nope'], as);
  L.check(r.code === 1 && json(r.stdout).error, 'session get of an unknown id: the JSON error printed, exit 1', [1, 'error'], [r.code, r.stdout]);

  const state = async () => json((await ctl(['session', 'get', s1.id], as)).stdout).state;
  await L.until(async () => await state() === 'ready', 'session ready', 60000);
  r = await ctl(['session', 'sleep', s1.id], as);
  L.eq(r.code, 0, 'session sleep: accepted');
  await L.until(async () => await state() === 'sleeping', 'session sleeping', 30000);
  r = await ctl(['session', 'wake', s1.id], as);
  L.eq(r.code, 0, 'session wake: accepted');
  await L.until(async () => await state() === 'ready', 'session ready again', 60000);
  r = await ctl(['session', 'messages', s1.id], as);
  L.eq([r.code, r.stdout], [0, '[]\n'], 'session messages: none without a turn');

  // files: put a file with an awkward name (escaped in the query), list, get, rm.
  const fs = require('fs'), path = require('path');
  const local = path.join(L.tmpdir('cli-files'), 'in.txt');
  fs.writeFileSync(local, 'hello from cortexctl\n');
  const remote = '/workspace/dir a/x y=1.txt'; // ('&' is not addressable yet: lws splits decoded args)
  r = await ctl(['files', 'put', s1.id, remote, local], as);
  L.eq(r.code, 0, 'files put: exit 0');
  r = await ctl(['files', 'ls', s1.id, '/workspace/dir a'], as);
  const ls = json(r.stdout);
  L.eq([r.code, (ls.entries || []).map(e => [e.name, e.type, e.size])], [0, [['x y=1.txt', 'file', 21]]],
    'files ls: the entry, its type and size');
  r = await ctl(['files', 'get', s1.id, remote], as);
  L.eq([r.code, r.stdout], [0, 'hello from cortexctl\n'], 'files get: the bytes exactly');
  r = await ctl(['files', 'get', s1.id, '/etc/passwd'], as);
  L.check(r.code === 1 && /bad_path/.test(r.stdout), 'files get outside the roots: the JSON error, exit 1', [1, 'bad_path'], [r.code, r.stdout]);
  r = await ctl(['files', 'rm', s1.id, '/workspace/dir a'], as);
  L.check(r.code === 1 && /not_empty/.test(r.stdout), 'files rm of a non-empty dir without -r: exit 1', [1, 'not_empty'], [r.code, r.stdout]);
  r = await ctl(['files', 'rm', s1.id, '/workspace/dir a', '-r'], as);
  L.eq(r.code, 0, 'files rm -r: exit 0');
  r = await ctl(['files', 'get', s1.id, remote], as);
  L.eq(r.code, 1, 'files get after rm: exit 1');
  r = await ctl(['files', 'rm', s1.id, '/workspace/x', '-f'], as);
  L.eq(r.code, 2, 'files rm with an unknown flag: usage, exit 2');
  for (const s of [s1, s2]) {
    r = await ctl(['session', 'delete', s.id], as);
    L.eq([r.code, r.stdout], [0, ''], `session delete ${s.surface}: exit 0, no body`);
  }
  r = await ctl(['session', 'list'], as);
  L.eq([r.code, r.stdout], [0, '[]\n'], 'session list after the deletes');
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  L.done();
})();

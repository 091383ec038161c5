// The sandbox boundary, checked from inside through the real agent's real
// Bash tool: the model stand-in answers "RUN: cmd" with a Bash tool_use and
// echoes the tool's output back as TOOL_OUTPUT<<<...>>>.
'use strict';
const fs = require('fs');
const L = require('./lib');

const run = L.runInside;

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const sid = (await L.http(d.base, 'POST', '/v1/sessions', alice, {})).json.id;
  const c = L.connect(d.base, sid, alice);
  await c.opened;

  let out = await run(c, "for d in /proc/[0-9]*; do echo \"${d#/proc/}:$(tr '\\0' ' ' < $d/cmdline)\"; done");
  L.check(/ws-agent/.test(out) && /claude/.test(out), 'the sandbox sees its own processes', 'ws-agent, claude', out);
  L.check(!/model-server|sandbox\.test\.js|ctest/.test(out), "the sandbox cannot see the host's processes", 'no model-server / test runner', out);
  // The sandbox's PID 1 is forked from cortexd but shows an argv of its own; the daemon's never appears.
  L.check(/^1:cortex-init $/m.test(out), "PID 1 reads cortex-init, not cortexd's argv", '1:cortex-init', out);
  const daemonLines = out.split('\n').filter(l => /cortexd/.test(l) && !/RUN:|shell-snapshots/.test(l));
  L.eq(daemonLines, [], 'no cortexd-named process inside');
  const pids = (await run(c, "ls /proc | grep -c '^[0-9]'")).trim();
  L.check(Number(pids) > 0 && Number(pids) < 30, 'only a handful of pids in the sandbox /proc', '< 30', pids);

  out = await run(c, 'id -u; id -g; grep -E "^(NoNewPrivs|Seccomp):" /proc/self/status; hostname');
  const ids = out.split('\n').slice(0, 2).map(Number);
  L.check(ids[0] >= 200000 && ids[0] === ids[1], 'agent tools run as the session\'s own unprivileged uid (sandbox.uid_base..)', '>= 200000, uid = gid', out);
  L.check(/NoNewPrivs:\s+1/.test(out) && /Seccomp:\s+2/.test(out), 'no_new_privs and a seccomp filter are on', 'NoNewPrivs 1, Seccomp 2', out);

  const probes = ['/etc/cx_probe', '/usr/cx_probe', '/cx_probe', '/opt/cx_probe', '/var/cx_probe', `${d.dataDir}/cx_probe`];
  out = await run(c, `for p in ${probes.join(' ')}; do ` +
    'if touch $p 2>/dev/null; then echo WROTE:$p; else echo DENIED:$p; fi; done; ' +
    'for p in /home/agent/cx_ok /workspace/cx_ok /tmp/cx_ok; do if touch $p; then echo WROTE:$p; else echo DENIED:$p; fi; done');
  for (const p of probes)
    L.check(out.includes('DENIED:' + p), `cannot write ${p}`, 'DENIED', out);
  for (const p of ['/home/agent/cx_ok', '/workspace/cx_ok', '/tmp/cx_ok'])
    L.check(out.includes('WROTE:' + p), `can write ${p}`, 'WROTE', out);
  L.eq(probes.filter(p => fs.existsSync(p)), [], 'nothing appeared on the host');
  L.check(fs.existsSync(`${d.dataDir}/sessions/${sid}/disk/workspace/cx_ok`), '/workspace is the session dir on the host', 'exists', 'missing');

  out = await run(c, `ls -A ${d.dataDir} | wc -l; ls /root 2>&1 | head -1; cat ${d.dataDir}/cortex.db 2>&1 | head -c 40`);
  // wc counts what ls lists on stdout: 0 for an empty or absent dir.
  L.check(/^0$/m.test(out) && !/SQLite format/.test(out), "the daemon's data dir is masked inside", 'empty or absent', out);
  L.check(/No such file|Permission denied/.test(out.split('\n').slice(1).join('\n')), '/root is not readable inside', 'absent', out);

  out = await run(c, 'ls /tmp');
  L.check(!/vf-pending-query/.test(out), 'the context file is deleted once read', 'absent', out);

  // Nothing outlives cortexd, even when it is killed without a chance to clean up.
  // This session's only (its cgroup names it): other daemons on the host run ws-agents too.
  const sandboxPids = () => fs.readdirSync('/proc').filter(x => /^\d+$/.test(x)).filter(x => {
    try {
      return fs.readFileSync(`/proc/${x}/cmdline`, 'utf8').includes('/cortex/rt/ws-agent') &&
        fs.readFileSync(`/proc/${x}/cgroup`, 'utf8').includes(`/${sid}\n`);
    } catch (e) { return false; }
  });
  const before = sandboxPids();
  L.check(before.length >= 1, 'ws-agent runs (host view) before the daemon dies', '>= 1', before.length);
  await c.close();
  const exited = new Promise(res => d.proc.once('exit', res));
  d.proc.kill('SIGKILL');
  await exited;
  const gone = await L.until(() => before.every(p => !fs.existsSync(`/proc/${p}`)), 'sandbox processes gone', 10000).then(() => true, () => false);
  L.check(gone, 'SIGKILL of cortexd leaves no sandbox process behind', [], before.filter(p => fs.existsSync(`/proc/${p}`)));
  L.unmountUnder(d.dataDir); // its disks stay mounted until a cortexd starts on the dir again
  L.done();
})();

// The store never loses an acknowledged turn in silence: with cortexd's data
// dir on a small file system that fills up, a turn whose transcript cannot be
// written reaches the client as cortex.error (store_write_failed), /healthz
// turns 503 and the failure is counted; once there is room again the next
// turn is stored and /healthz is 200 again.  (Session disks are files of
// their own: a sandbox cannot fill the data dir; here the test fills it from
// the host.)
'use strict';
const fs = require('fs');
const path = require('path');
const {execFileSync} = require('child_process');
const L = require('./lib');

(async () => {
  const model = await L.startModelServer();
  const mnt = L.tmpdir('storefull');
  // 48 MB: the store and logs; session disks are sparse files that hold
  // little until written.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m,mode=0700', 'cortex-test', mnt]);
  process.on('exit', () => { try { execFileSync('umount', ['-l', mnt]); } catch (e) { /* already gone */ } });
  const d = await L.startCortexd({dataDir: path.join(mnt, 'data'),
    env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const sid = (await L.http(d.base, 'POST', '/v1/sessions', alice, {limits: {disk_mb: 16}})).json.id;
  const c = L.connect(d.base, sid, alice);
  await c.opened;
  let fr = await L.turn(c, 'before the disk fills');
  L.eq(L.textOf(fr), 'Echo: before the disk fills. Done.', 'a turn with room to spare');

  // Fill the data dir's file system to the last block.
  const filler = path.join(mnt, 'filler');
  try { execFileSync('dd', ['if=/dev/zero', 'of=' + filler, 'bs=64k'], {stdio: 'ignore'}); } catch (e) { /* ENOSPC: full */ }
  const big = 'x'.repeat(120 * 1024); // under the message cap; more than the WAL's free pages
  const start = c.frames.length;
  c.send({type: 'message', text: 'after the fill ' + big});
  const err = await c.waitFor(f => c.frames.indexOf(f) >= start && f.type === 'cortex.error' && f.code === 'store_write_failed',
    'cortex.error store_write_failed', 60000).catch(e => ({missing: e.message.slice(0, 300)}));
  L.eq(err.code, 'store_write_failed', 'a transcript that cannot be written reaches the client as cortex.error');
  L.check(err.message && !err.message.includes(mnt), '... naming no host path', 'no host path', err.message);
  let hz = await L.http(d.base, 'GET', '/healthz');
  L.eq([hz.status, hz.json && hz.json.store], [503, 'failing'], '/healthz says 503, store failing');
  const m = await L.metrics(d);
  L.check(m['cortex_store_write_failures_total'] >= 1, 'the failure is counted in /metrics', '>= 1', m['cortex_store_write_failures_total']);
  await c.waitFor(f => c.frames.indexOf(f) >= start && (f.type === 'cortex.done' || f.type === 'cortex.error' && f.code !== 'store_write_failed'), 'end of the turn', 60000).catch(() => null);

  // Room again: the next turn is stored and the daemon is healthy again.
  fs.unlinkSync(filler);
  // Late store_write_failed frames of the previous turn may still arrive:
  // this turn ends with its cortex.done.
  const s3 = c.frames.length;
  c.send({type: 'message', text: 'after the room came back'});
  const d3 = await c.waitFor(f => c.frames.indexOf(f) >= s3 && f.type === 'cortex.done', 'the next turn done', 60000);
  fr = c.frames.slice(s3, c.frames.indexOf(d3) + 1);
  L.eq(L.textOf(fr), 'Echo: after the room came back. Done.', 'the next turn runs');
  const msgs = await L.until(async () => {
    const r = (await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages`, alice)).json;
    const list = Array.isArray(r) ? r : r.messages;
    return list && list.some(x => x.text === 'Echo: after the room came back. Done.') ? list : null;
  }, 'the turn after the fill is in the transcript', 15000);
  L.check(msgs.length >= 3, 'and it is stored', '>= 3 messages', msgs.length);
  hz = await L.http(d.base, 'GET', '/healthz');
  L.eq(hz.status, 200, '/healthz is 200 again after a write succeeded');
  await c.close();
  await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, alice);
  L.eq(await d.stop(), 0, 'cortexd exits cleanly');
  L.done();
})();

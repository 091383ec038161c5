// A sandbox in its own network namespace (config sandbox.net_isolated):
// the real agent's turns reach the model only through ws-agent's forwarder
// (127.0.0.1:<gateway port> inside -> cortexd's gateway Unix socket), while
// from inside, through the agent's Bash tool, the host's loopback ports (the
// model stand-in, cortexd's API) are unreachable and only `lo` exists.
'use strict';
const fs = require('fs');
const L = require('./lib');

const KEY = 'sk-ant-PROVIDER-KEY-netns-5b2e';

(async () => {
  const model = await L.startModelServer();
  const modelPort = Number(new URL(model.url).port);
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({sandbox: {net_isolated: true}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  let r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: model.url, api_key: KEY});
  L.check(r.status === 201, 'alice configures her provider', 201, r.status);

  const {sid, c} = await L.hotSession(d, alice);

  const n0 = model.requests().length;
  const fr = await L.turn(c, 'hi there');
  L.eq(L.textOf(fr), 'Echo: hi there. Done.', 'a turn streams through the forwarder and the gateway');
  const reqs = model.requests().slice(n0).filter(q => q.url.startsWith('/v1/messages'));
  L.check(reqs.length >= 1 && reqs.every(q => q.headers['x-api-key'] === KEY), 'the provider got the key from the gateway', KEY, reqs.map(q => q.headers['x-api-key']));

  let out = await L.runInside(c, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
  L.eq(out.trim(), 'lo', 'only lo inside');
  out = await L.runInside(c, 'ls /sys/class/net 2>&1 | tr "\\n" " "');
  L.check(!/eth|ens|enp|wl|ifb|docker|veth|br-/.test(out), '/sys/class/net shows none of the host\'s interfaces', 'lo or nothing', out);
  console.log('note: /sys/class/net inside: ' + out.trim());
  out = await L.runInside(c, 'echo $ANTHROPIC_BASE_URL');
  L.check(/^http:\/\/127\.0\.0\.1:\d+$/.test(out.trim()), 'the agent\'s base URL is its own loopback', 'http://127.0.0.1:PORT', out);
  for (const [what, port] of [['the model stand-in', modelPort], ['cortexd\'s API', d.port]]) {
    out = await L.runInside(c, `(exec 3<>/dev/tcp/127.0.0.1/${port}) 2>/dev/null; echo rc=$?`);
    L.eq(out.trim(), 'rc=1', `bash /dev/tcp to ${what} (host port ${port}) fails inside`);
    out = await L.runInside(c, `if command -v curl >/dev/null; then curl -s -m 3 -o /dev/null http://127.0.0.1:${port}/; echo rc=$?; else echo no-curl; fi`);
    if (out.trim() === 'no-curl') console.log('note: the image has no curl; /dev/tcp above stands for it');
    else L.eq(out.trim(), 'rc=7', `curl to ${what} fails inside (couldn't connect)`);
  }
  // The forwarder itself answers inside (the gateway refuses a request without the token).
  out = await L.runInside(c, 'p=${ANTHROPIC_BASE_URL##*:}; exec 3<>/dev/tcp/127.0.0.1/$p && printf \'GET /v1/models HTTP/1.0\\r\\n\\r\\n\' >&3 && head -c 12 <&3');
  L.check(/^HTTP\/1\.[01] 4\d\d/.test(out.trim()), 'the forwarder reaches the gateway, which wants the token', 'HTTP/1.x 4xx', out);
  const fr2 = await L.turn(c, 'again');
  L.eq(L.textOf(fr2), 'Echo: again. Done.', 'a later turn still works');

  c.ws.close();
  await d.stop();
  L.done();
})().catch(e => { console.error(e); process.exit(1); });

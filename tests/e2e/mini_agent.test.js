// mini_agent.test.js — tests/fixtures/mini-agent on its own, driven over stdin
// exactly as Claude Code in `--input-format stream-json` mode is driven.  The
// expected lines below are the format the latency bench relies on.  Each
// answer is read while stdin is still open: the agent must not wait for EOF.
'use strict';
const {spawn} = require('child_process');
const L = require('./lib');

const MINI = process.env.MINI_AGENT;
if (!MINI) { console.error('MINI_AGENT is not set'); process.exit(2); }

const p = spawn(MINI, ['-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose',
  '--include-partial-messages', '--permission-mode', 'bypassPermissions', '--continue', '--model', 'm'],
{stdio: ['pipe', 'pipe', 'pipe']});
const lines = [];
let buf = '', err = '', waiter = null;
p.stdout.on('data', d => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) { lines.push(buf.slice(0, i)); buf = buf.slice(i + 1); }
  if (waiter && lines.length >= waiter.n) { clearTimeout(waiter.t); waiter.resolve(); waiter = null; }
});
p.stderr.on('data', d => { err += d; });
// 'close': the process exited AND its stdout/stderr were read to the end.
const exited = new Promise(res => p.on('close', (code, sig) => res({code, sig})));

// Write one line; resolve with the next n lines printed.
function send(line, n) {
  const start = lines.length;
  return new Promise((resolve, reject) => {
    waiter = {n: start + n, resolve: () => resolve(lines.slice(start, start + n)),
      t: setTimeout(() => reject(new Error(`no ${n} line(s) after ${line}; got ${JSON.stringify(lines.slice(start))}`)), 5000)};
    p.stdin.write(line + '\n');
  });
}

const ev = e => JSON.stringify({type: 'stream_event', event: e});
function answer(text) {
  const full = 'Echo: ' + text;
  return [
    '{"type":"system","subtype":"init","session_id":"mini","tools":[],"mcp_servers":[]}',
    ev({type: 'message_start', message: {id: 'msg_mini', type: 'message', role: 'assistant', model: 'mini',
      content: [], stop_reason: null, usage: {input_tokens: 1, output_tokens: 1}}}),
    ev({type: 'content_block_start', index: 0, content_block: {type: 'text', text: ''}}),
    ev({type: 'content_block_delta', index: 0, delta: {type: 'text_delta', text: 'Echo: '}}),
    ev({type: 'content_block_delta', index: 0, delta: {type: 'text_delta', text}}),
    ev({type: 'content_block_stop', index: 0}),
    ev({type: 'message_stop'}),
    JSON.stringify({type: 'assistant', message: {id: 'msg_mini', type: 'message', role: 'assistant', model: 'mini',
      content: [{type: 'text', text: full}], stop_reason: 'end_turn'}, session_id: 'mini'}),
    JSON.stringify({type: 'result', subtype: 'success', is_error: false, result: full, session_id: 'mini',
      usage: {input_tokens: 1, output_tokens: 2}}),
  ];
}
const user = content => JSON.stringify({type: 'user', message: {role: 'user', content}});

(async () => {
  L.eq(await send('{"type":"control_request","request_id":"cx-init-1","request":{"subtype":"initialize"}}', 1),
    ['{"type":"control_response","response":{"subtype":"success","request_id":"cx-init-1","response":{}}}'],
    'initialize -> control_response success with the same request_id');

  L.eq(await send(user([{type: 'text', text: 'hello'}]), 9), answer('hello'),
    'user message -> init, message_start, block start, 2 text deltas, block stop, message_stop, assistant, result');

  const odd = 'quotes " \\ newline \n tab \t unicode h\u00e9llo \u2713 \ud83d\ude00';
  L.eq(await send(user([{type: 'text', text: odd}]), 9), answer(odd), 'escapes and UTF-8 survive the round trip');

  L.eq(await send(user('plain string content'), 9), answer('plain string content'), 'string content is answered too');

  L.eq(await send(user([{type: 'text', text: 'a'}, {type: 'image'}, {type: 'text', text: 'b'}]), 9), answer('ab'),
    'text blocks are joined, other blocks ignored');

  // FLOOD n size (bench/flood.js): n deltas in Claude Code's full shape, a summary at the end.
  const flood = await send(user('FLOOD 3 60'), 10);
  const delta = k => '{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta",' +
    '"text":"lorem ipsum dolor sit amet consectetur adipiscing elit lorem"}},' +
    '"session_id":"6f1c2a5e-4b7d-4e0a-9c3f-1d2e3f4a5b6c","parent_tool_use_id":null,' +
    `"uuid":"0b5e7c1d-2f3a-4c6b-8d9e-00000000000${k}"}`;
  const summary = answer('flood: 3 deltas of 60 bytes');
  L.eq(flood, summary.slice(0, 3).concat([delta(0), delta(1), delta(2)], summary.slice(5)),
    'FLOOD 3 60 -> 3 text_delta lines of 60 bytes as Claude Code writes them, then the summary answer');

  // Not JSON and unknown types print nothing; the next request is still answered in order.
  L.eq(await send('not json\n{"type":"keep_alive"}\n{"type":"control_request","request_id":7,"request":{"subtype":"interrupt"}}', 1),
    ['{"type":"control_response","response":{"subtype":"success","request_id":7,"response":{}}}'],
    'bad line and unknown type ignored; interrupt answered with a numeric request_id kept as is');

  p.stdin.end();
  const ex = await exited;
  // stderr is its own pipe: only after close is all of it read.
  L.check(/not a JSON object/.test(err), 'the bad line is reported on stderr', 'not a JSON object', err);
  L.eq(ex, {code: 0, sig: null}, 'EOF on stdin -> exit 0');
  L.eq(buf, '', 'no partial line left at exit');
  L.done();
})();

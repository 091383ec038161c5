// flood-server.js — the nginx side's flood source for bench/flood.js: a Node
// `ws` server that answers {"type":"message","text":"FLOOD <n> <size>"} with
// the frames cortexd sends a client for tests/fixtures/mini-agent's flood
// (system, message_start, content_block_start, n text_delta frames of <size>
// ASCII bytes, content_block_stop, message_stop, assistant, result, then a
// cortex.done), each with "seq" first, byte for byte the same shape and size
// as cortexd's frames.  It respects backpressure (waits for 'drain' past
// 1 MiB buffered) as cortexd does.  Prints "flood-server listening on PORT".
'use strict';
const {WebSocketServer} = require('ws');

const SESSION = '6f1c2a5e-4b7d-4e0a-9c3f-1d2e3f4a5b6c';
const WORDS = 'lorem ipsum dolor sit amet consectetur adipiscing elit ';
const HIGH_WATER = 1 << 20;

// The agent line of one text delta after "{", up to the uuid's last 12 hex
// digits: as mini-agent's flood_deltas() writes it.
function deltaBody(size) {
  const text = WORDS.repeat(Math.ceil(size / WORDS.length) + 1).slice(0, size);
  return '"type":"stream_event","event":{"type":"content_block_delta","index":0,' +
    `"delta":{"type":"text_delta","text":"${text}"}},"session_id":"${SESSION}",` +
    '"parent_tool_use_id":null,"uuid":"0b5e7c1d-2f3a-4c6b-8d9e-';
}

const ev = e => JSON.stringify({type: 'stream_event', event: e}).slice(1);

async function flood(ws, n, size, seq) {
  const sock = ws._socket;
  const send = body => {
    ws.send(`{"seq":${++seq},${body}`);
    if (ws.bufferedAmount > HIGH_WATER) return new Promise(r => sock.once('drain', r));
    return null;
  };
  const summary = `Echo: flood: ${n} deltas of ${size} bytes`;
  send('"type":"system","subtype":"init","session_id":"mini","tools":[],"mcp_servers":[]}');
  send(ev({type: 'message_start', message: {id: 'msg_mini', type: 'message', role: 'assistant', model: 'mini',
    content: [], stop_reason: null, usage: {input_tokens: 1, output_tokens: 1}}}));
  send(ev({type: 'content_block_start', index: 0, content_block: {type: 'text', text: ''}}));
  // One body string; only the uuid's 12 hex digits change per frame.
  const head = deltaBody(size);
  for (let k = 0; k < n; k++) {
    const w = send(head + k.toString(16).padStart(12, '0') + '"}');
    if (w) await w;
    if (ws.readyState !== ws.OPEN) return seq;
  }
  send(ev({type: 'content_block_stop', index: 0}));
  send(ev({type: 'message_stop'}));
  send(JSON.stringify({type: 'assistant', message: {id: 'msg_mini', type: 'message', role: 'assistant', model: 'mini',
    content: [{type: 'text', text: summary}], stop_reason: 'end_turn'}, session_id: 'mini'}).slice(1));
  send(JSON.stringify({type: 'result', subtype: 'success', is_error: false, result: summary, session_id: 'mini',
    usage: {input_tokens: 1, output_tokens: 2}}).slice(1));
  send(JSON.stringify({type: 'cortex.done', turn: 1, path: 'warm', agent: 'hot'}).slice(1));
  return seq;
}

const wss = new WebSocketServer({host: '127.0.0.1', port: Number(process.env.PORT || 0), perMessageDeflate: false});
wss.on('connection', ws => {
  let seq = 0, busy = false;
  ws.on('message', async data => {
    let m;
    try { m = JSON.parse(data.toString()); } catch (e) { return; }
    const f = m && m.type === 'message' && /^FLOOD (\d+) (\d+)$/.exec(m.text || '');
    if (!f || busy) return;
    busy = true;
    seq = await flood(ws, Number(f[1]), Number(f[2]), seq);
    busy = false;
  });
});
wss.on('listening', () => console.log(`flood-server listening on ${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));

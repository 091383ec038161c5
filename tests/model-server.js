#!/usr/bin/env node
// Anthropic-Messages-compatible streaming stand-in for the paid model service.
// Only the model is faked: the real Claude Code CLI talks to this over HTTP/SSE.
// Reply text: "MODEL_REPLY" env, else an echo of the last user text; "SLOW<ms>"
// in the user's text sends one word every <ms>; "STATUS<nnn>" answers with
// that HTTP error; "CUTSTREAM" drops the connection mid-stream.
// Tool use: a user text "RUN: <command>" is answered with a Bash tool_use, and
// the tool_result that the agent sends back is answered with
// "TOOL_OUTPUT<<<...>>>": tests use this to look at the sandbox from inside,
// through the real agent's real Bash tool.
// Demo mode (MODEL_DEMO=1, what `make run` starts when no provider is
// configured: contrib/cortex-run.sh): every reply starts with DEMO_LABEL and is
// a canned, friendly text that echoes the prompt, streamed one word every
// MODEL_DELTA_MS (default 40) ms; "RUN: <command>" still runs the command through
// the agent's Bash tool, and the output comes back labelled; the message's model
// is "demo-model-not-a-real-ai".  The test hooks
// (STATUS, CUTSTREAM, SLOW, MODEL_REPLY) are off.  MODEL_LIFELINE=1: exit when
// stdin closes (the script that started it holds the other end).
// Prints "model-server listening on PORT" once it accepts connections.
'use strict';
const http = require('http');
const port = Number(process.env.PORT || 0);
const demo = process.env.MODEL_DEMO === '1';
const DEMO_LABEL = '[demo model \u2014 not a real AI]';
const MAX_BODY = 64 << 20; // a request body past this is refused (413)
const DEMO_ECHO_MAX = 200, DEMO_TOOL_MAX = 2000; // characters of the prompt / tool output quoted back
const log = process.env.MODEL_LOG ? require('fs').createWriteStream(process.env.MODEL_LOG, {flags: 'a'}) : null;

function lastToolResult(body) {
  const msgs = body.messages || [];
  const m = msgs[msgs.length - 1];
  if (!m || m.role !== 'user' || typeof m.content === 'string') return null;
  const tr = m.content.find(b => b.type === 'tool_result');
  if (!tr) return null;
  const c = tr.content;
  if (typeof c === 'string') return c;
  return (c || []).filter(b => b.type === 'text').map(b => b.text).join('');
}

function lastUserText(body) {
  const msgs = body.messages || [];
  for (let i = msgs.length - 1; i >= 0; i--) {
    if (msgs[i].role !== 'user') continue;
    const c = msgs[i].content;
    if (typeof c === 'string') return c;
    const texts = c.filter(b => b.type === 'text').map(b => b.text);
    if (texts.length) return texts[texts.length - 1];
  }
  return '';
}

function clip(t, n) { return t.length > n ? t.slice(0, n) + '\u2026' : t; }

function demoText(user, toolOut) {
  if (toolOut !== null)
    return `${DEMO_LABEL} Your agent ran that command in the session's sandbox, and it printed:\n\n` +
      clip(toolOut, DEMO_TOOL_MAX) + '\n\n(The command was real; this sentence is canned text from the demo model.)';
  return `${DEMO_LABEL} Hello from Cortex! You wrote: "${clip(user.trim(), DEMO_ECHO_MAX)}". ` +
    'This answer is canned text from the demo model (tests/model-server.js), which `make run` started ' +
    'because no model provider is configured. It streamed word by word through a real Claude Code agent ' +
    'running in a real sandbox, so what you see is the real path, with a fake model at the end of it. ' +
    'Send "RUN: uname -a" to watch the agent run a command inside the sandbox. ' +
    'For real answers, set up a provider: see "Switch to a real provider" in the README.';
}

const server = http.createServer((req, res) => {
  let chunks = [], size = 0;
  req.on('data', c => {
    size += c.length;
    if (size > MAX_BODY) { res.writeHead(413, {'content-type': 'application/json', connection: 'close'}); res.end('{}'); req.destroy(); return; }
    chunks.push(c);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return;
    const raw = Buffer.concat(chunks).toString();
    let body = {};
    try { body = raw ? JSON.parse(raw) : {}; } catch (e) {
      if (log) log.write(JSON.stringify({method: req.method, url: req.url, bad_json: true}) + '\n');
      res.writeHead(400, {'content-type': 'application/json'});
      return res.end(JSON.stringify({type: 'error', error: {type: 'invalid_request_error', message: 'bad json'}}));
    }
    if (log) log.write(JSON.stringify({method: req.method, url: req.url, headers: req.headers,
      stream: !!body.stream, model: body.model, n_messages: (body.messages || []).length, bytes: size,
      system_bytes: JSON.stringify(body.system || '').length, tools_bytes: JSON.stringify(body.tools || []).length,
      last_user: lastUserText(body).slice(0, 200),
      // What the agent put in front of the model: MARK_* strings (tests plant them in
      // CLAUDE.md and plugin files) and the MCP tools it offers.
      markers: [...new Set(raw.match(/MARK_[A-Za-z0-9_]+/g) || [])],
      mcp_tools: (body.tools || []).map(t => t.name).filter(n => n && n.startsWith('mcp__')),
      tool_names: (body.tools || []).map(t => t.name + (t.defer_loading ? '(deferred)' : ''))}) + '\n');
    const url = req.url.split('?')[0];
    if (url.endsWith('/count_tokens')) {
      res.writeHead(200, {'content-type': 'application/json'});
      return res.end(JSON.stringify({input_tokens: 10}));
    }
    if (!url.endsWith('/v1/messages')) {
      res.writeHead(404, {'content-type': 'application/json'});
      return res.end(JSON.stringify({type: 'error', error: {type: 'not_found_error', message: url}}));
    }
    const user = lastUserText(body);
    // "STATUS<nnn>" in the user's text: answer with that HTTP error (provider
    // failures); "CUTSTREAM": send a few deltas, then drop the connection.
    const st = demo ? null : user.match(/\bSTATUS(\d{3})\b/);
    if (st) {
      res.writeHead(Number(st[1]), {'content-type': 'application/json'});
      return res.end(JSON.stringify({type: 'error', error: {type: Number(st[1]) === 429 ? 'rate_limit_error' : 'api_error',
        message: `stand-in provider says ${st[1]}`}}));
    }
    const cutAfter = !demo && /\bCUTSTREAM\b/.test(user) ? 2 : -1;
    const toolOut = lastToolResult(body);
    const runCmd = toolOut === null && user.startsWith('RUN: ') ? user.slice(5) : null;
    const text = demo ? demoText(user, toolOut)
      : toolOut !== null ? 'TOOL_OUTPUT<<<' + toolOut + '>>>'
      : (process.env.MODEL_REPLY || ('Echo: ' + user + '. Done.'));
    const words = text.match(/\S+\s*/g) || [text];
    const model = demo ? 'demo-model-not-a-real-ai' : (body.model || 'claude-test');
    const id = 'msg_' + Math.random().toString(36).slice(2);
    const usage = {input_tokens: 11, output_tokens: words.length};
    if (!body.stream) {
      res.writeHead(200, {'content-type': 'application/json'});
      return res.end(JSON.stringify({id, type: 'message', role: 'assistant', model,
        content: [{type: 'text', text}], stop_reason: 'end_turn', stop_sequence: null, usage}));
    }
    res.writeHead(200, {'content-type': 'text/event-stream', 'cache-control': 'no-cache'});
    const ev = (name, data) => res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
    if (runCmd !== null) {
      ev('message_start', {type: 'message_start', message: {id, type: 'message', role: 'assistant', model,
        content: [], stop_reason: null, stop_sequence: null, usage: {input_tokens: usage.input_tokens, output_tokens: 1}}});
      let b = 0;
      if (demo) { // the demo labels every message, this one too
        ev('content_block_start', {type: 'content_block_start', index: b, content_block: {type: 'text', text: ''}});
        ev('content_block_delta', {type: 'content_block_delta', index: b,
          delta: {type: 'text_delta', text: `${DEMO_LABEL} Running your command in the sandbox.\n`}});
        ev('content_block_stop', {type: 'content_block_stop', index: b++});
      }
      ev('content_block_start', {type: 'content_block_start', index: b,
        content_block: {type: 'tool_use', id: 'toolu_' + id.slice(4), name: 'Bash', input: {}}});
      ev('content_block_delta', {type: 'content_block_delta', index: b,
        delta: {type: 'input_json_delta', partial_json: JSON.stringify({command: runCmd, description: 'probe'})}});
      ev('content_block_stop', {type: 'content_block_stop', index: b});
      ev('message_delta', {type: 'message_delta', delta: {stop_reason: 'tool_use', stop_sequence: null}, usage: {output_tokens: 5}});
      ev('message_stop', {type: 'message_stop'});
      return res.end();
    }
    ev('message_start', {type: 'message_start', message: {id, type: 'message', role: 'assistant', model,
      content: [], stop_reason: null, stop_sequence: null, usage: {input_tokens: usage.input_tokens, output_tokens: 1}}});
    ev('content_block_start', {type: 'content_block_start', index: 0, content_block: {type: 'text', text: ''}});
    // "SLOW<ms>" anywhere in the user's text paces this reply's deltas (tests of
    // cancel, resume and reconnect need a turn that is still streaming).
    const slow = demo ? null : user.match(/\bSLOW(\d+)\b/);
    const delay = slow ? Number(slow[1]) : Number(process.env.MODEL_DELTA_MS || (demo ? 40 : 0));
    let i = 0;
    const next = () => {
      if (i === cutAfter) return res.socket.destroy();
      if (i < words.length) {
        ev('content_block_delta', {type: 'content_block_delta', index: 0, delta: {type: 'text_delta', text: words[i++]}});
        return delay ? setTimeout(next, delay) : setImmediate(next);
      }
      ev('content_block_stop', {type: 'content_block_stop', index: 0});
      ev('message_delta', {type: 'message_delta', delta: {stop_reason: 'end_turn', stop_sequence: null}, usage: {output_tokens: usage.output_tokens}});
      ev('message_stop', {type: 'message_stop'});
      res.end();
    };
    next();
  });
});
if (process.env.MODEL_LIFELINE === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
  // A signal ends it at once (a shell starts it with SIGINT ignored).
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(0));
}
server.listen(port, '127.0.0.1', () => {
  console.log('model-server listening on ' + server.address().port);
});

// A small Chrome DevTools Protocol client over the ws package, for driving
// Debian's headless Chromium from e2e.dashboard and bench/dashboard_paint.js:
// real mouse and key events (Input.dispatch*), DOM reads through
// Runtime.evaluate, screenshots.  Every wait is bounded.
'use strict';
const {spawn} = require('child_process');
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');

// Start chromium headless on a free debugging port; resolve with a Browser.
// --no-sandbox: Chromium refuses to start as root with its own sandbox on;
// here it only ever loads our own page from cortexd on loopback.
async function launch(userDataDir, {width = 1280, height = 900} = {}) {
  const bin = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(f => fs.existsSync(f));
  if (!bin) throw new Error('no chromium: apt-get install chromium (the Makefile\'s APT_PKGS has it)');
  const proc = spawn(bin, ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--metrics-recording-only', '--mute-audio',
    `--window-size=${width},${height}`, '--remote-debugging-port=0', '--remote-debugging-address=127.0.0.1',
    `--user-data-dir=${userDataDir}`, 'about:blank'], {stdio: ['ignore', 'ignore', 'pipe']});
  process.on('exit', () => { try { proc.kill('SIGKILL'); } catch (e) { /* gone */ } });
  let err = '';
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('chromium: no DevTools URL within 30 s\n' + err.slice(-3000))), 30000);
    proc.stderr.on('data', d => {
      err += d;
      const m = err.match(/DevTools listening on (ws:\/\/\S+)/);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    proc.on('exit', (c, s) => { clearTimeout(t); reject(new Error(`chromium exited (${c}, ${s})\n${err.slice(-3000)}`)); });
  });
  const b = new Browser(proc, new WebSocket(url, {perMessageDeflate: false}), () => err);
  await new Promise((res, rej) => { b.ws.once('open', res); b.ws.once('error', rej); });
  return b;
}

class Browser {
  constructor(proc, ws, logs) {
    this.proc = proc; this.ws = ws; this.logs = logs;
    this.next = 1; this.pending = new Map(); this.listeners = [];
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m.id && this.pending.has(m.id)) {
        const {resolve, reject, method} = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error) reject(new Error(`${method}: ${m.error.message}`)); else resolve(m.result);
      } else if (m.method) {
        for (const l of this.listeners) l(m);
      }
    });
  }

  send(method, params = {}, sessionId) {
    const id = this.next++;
    const msg = {id, method, params};
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      // Bounded: a renderer that hangs fails the test, naming the command.
      const t = setTimeout(() => { this.pending.delete(id); reject(new Error(`${method}: no answer within 60 s ${JSON.stringify(params).slice(0, 300)}`)); }, 60000);
      this.pending.set(id, {resolve: (v) => { clearTimeout(t); resolve(v); }, reject: (e) => { clearTimeout(t); reject(e); }, method});
      this.ws.send(JSON.stringify(msg));
    });
  }

  on(fn) { this.listeners.push(fn); }

  async newPage() {
    const {targetId} = await this.send('Target.createTarget', {url: 'about:blank'});
    const {sessionId} = await this.send('Target.attachToTarget', {targetId, flatten: true});
    const p = new Page(this, sessionId);
    await p.cmd('Page.enable');
    await p.cmd('Runtime.enable');
    await p.cmd('Log.enable');
    return p;
  }

  async close() {
    try { await this.send('Browser.close'); } catch (e) { /* it went away first */ }
    await new Promise(res => { if (this.proc.exitCode !== null) return res(); this.proc.once('exit', res); setTimeout(() => { this.proc.kill('SIGKILL'); }, 5000); });
    this.ws.terminate();
  }
}

class Page {
  constructor(b, sessionId) {
    this.b = b; this.sid = sessionId;
    this.console = []; this.exceptions = [];
    b.on((m) => {
      if (m.sessionId !== sessionId) return;
      if (m.method === 'Runtime.exceptionThrown') this.exceptions.push(m.params.exceptionDetails);
      if (m.method === 'Runtime.consoleAPICalled') this.console.push(m.params.type + ': ' + m.params.args.map(a => a.value).join(' '));
      if (m.method === 'Log.entryAdded') this.console.push(m.params.entry.level + ': ' + m.params.entry.text);
      if (m.method === 'Page.loadEventFired' && this.onLoad) this.onLoad();
    });
  }

  cmd(method, params) { return this.b.send(method, params, this.sid); }

  async goto(url, timeoutMs = 20000) {
    const loaded = new Promise((res, rej) => { const t = setTimeout(() => rej(new Error('load of ' + url + ' timed out')), timeoutMs); this.onLoad = () => { clearTimeout(t); res(); }; });
    await this.cmd('Page.navigate', {url});
    await loaded;
  }

  async eval(expression) {
    const r = await this.cmd('Runtime.evaluate', {expression, awaitPromise: true, returnByValue: true});
    if (r.exceptionDetails) throw new Error('evaluate: ' + (r.exceptionDetails.exception ? r.exceptionDetails.exception.description : r.exceptionDetails.text) + '\n  in: ' + expression);
    return r.result.value;
  }

  // Poll a page expression until it is truthy; its value, or an error naming what.
  async waitFor(expression, what, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.eval(expression);
      if (v) return v;
      if (Date.now() > deadline) {
        if (this.failShot) await this.screenshot(this.failShot).then(f => console.log('screenshot at the failure: ' + f), () => {});
        throw new Error(`timeout (${timeoutMs} ms) waiting for ${what}: ${expression}`);
      }
      await new Promise(r => setTimeout(r, 50)); // poll interval
    }
  }

  // A real click: mouse moved, pressed and released at the element's centre.
  async click(selector) {
    const c = await this.eval(`(() => { const e = document.querySelector(${JSON.stringify(selector)});
      if (!e) return null; e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();
      return {x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width}; })()`);
    if (!c || !c.w) throw new Error('click: no visible ' + selector);
    for (const type of ['mouseMoved', 'mousePressed', 'mouseReleased'])
      await this.cmd('Input.dispatchMouseEvent', {type, x: c.x, y: c.y, button: 'left', clickCount: type === 'mouseMoved' ? 0 : 1});
  }

  // Real typing into the focused element: one key down/up per character.
  async type(text) {
    for (const ch of text) {
      await this.cmd('Input.dispatchKeyEvent', {type: 'keyDown', text: ch, key: ch, unmodifiedText: ch});
      await this.cmd('Input.dispatchKeyEvent', {type: 'keyUp', key: ch});
    }
  }

  async press(key, modifiers = 0) {
    const codes = {Enter: [13, '\r'], Backspace: [8, ''], Tab: [9, '\t'], a: [65, '']};
    const [vk, text] = codes[key] || [0, ''];
    const down = {type: 'keyDown', key, code: key === 'a' ? 'KeyA' : key, windowsVirtualKeyCode: vk, text: modifiers ? '' : text, modifiers};
    if (key === 'a' && modifiers === 2) down.commands = ['selectAll'];
    await this.cmd('Input.dispatchKeyEvent', down);
    await this.cmd('Input.dispatchKeyEvent', {type: 'keyUp', key, code: key === 'a' ? 'KeyA' : key, windowsVirtualKeyCode: vk, modifiers});
  }

  async screenshot(file) {
    const {data} = await this.cmd('Page.captureScreenshot', {format: 'png'});
    fs.mkdirSync(path.dirname(file), {recursive: true});
    fs.writeFileSync(file, Buffer.from(data, 'base64'));
    return file;
  }
}

module.exports = {launch};

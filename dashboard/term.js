// term.js — the terminal pane: a command run with a pty through the session
// socket's exec frames (docs/protocol.md):
//   → {"type":"exec","id","cmd":[...],"cwd":"/workspace","pty":{"cols","rows"}}
//   → {"type":"stdin","id","data"}   {"type":"resize","id","cols","rows"}   {"type":"exec_cancel","id"}
//   ← {"type":"cortex.exec_started","id","pid","pty"}
//   ← {"type":"cortex.stdout"|"cortex.stderr","id","data"} (UTF-8 text: the exec asks no "encoding")
//   ← {"type":"cortex.exit","id","code","signal","timed_out","cancelled","ms","error"?},
//     or {"type":"cortex.error","id","code","message"}
// The screen is a small VT100 subset (cursor moves, erase, colours dropped),
// enough for a shell prompt and line-oriented programs; not a full emulator.
const MAX_LINES = 2000;

export class Terminal {
  constructor(pre, send, status) {
    this.pre = pre; this.send = send; this.status = status;
    this.id = null;
    this.reset();
    this.onKey = (ev) => this.key(ev);
    this.onPaste = (ev) => { if (this.id) { ev.preventDefault(); this.input(ev.clipboardData.getData('text')); } };
    this.onResize = () => this.resize();
    pre.addEventListener('keydown', this.onKey);
    pre.addEventListener('paste', this.onPaste);
    window.addEventListener('resize', this.onResize);
    this.render();
  }

  reset() { this.lines = [[]]; this.row = 0; this.col = 0; this.esc = ''; }

  // cols and rows that fit the pane, from one character's size.
  size() {
    const probe = document.createElement('span');
    probe.textContent = 'M';
    this.pre.append(probe);
    const w = probe.getBoundingClientRect().width || 8, h = probe.getBoundingClientRect().height || 16;
    probe.remove();
    const fit = (px, ch, min) => Math.min(1000, Math.max(min, Math.floor((px - 12) / ch))); // cortexd takes 1-1000
    return {cols: fit(this.pre.clientWidth, w, 20), rows: fit(this.pre.clientHeight, h, 5)};
  }

  start(cmdline) {
    if (this.id) return;
    const cmd = cmdline.trim().split(/\s+/).filter(Boolean);
    if (!cmd.length) return;
    this.id = 'term-' + Math.random().toString(36).slice(2, 10);
    this.reset();
    const {cols, rows} = this.size();
    this.dims = cols + 'x' + rows;
    if (!this.send({type: 'exec', id: this.id, cmd, cwd: '/workspace', pty: {cols, rows}})) {
      this.id = null;
      this.setStatus('not connected');
      return;
    }
    this.setStatus('running ' + cmd[0]);
    document.querySelector('#term-start').disabled = true;
    document.querySelector('#term-stop').disabled = false;
    this.pre.focus();
    this.render();
  }

  stop() { if (this.id) this.send({type: 'exec_cancel', id: this.id}); }

  owns(f) { return this.id !== null && f.id === this.id; }

  frame(f) {
    if (f.type === 'cortex.exit') {
      if (f.code === null) this.finish(f.error || (f.cancelled ? 'cancelled' : 'ended'));
      else this.finish(`${f.cancelled ? 'cancelled: ' : ''}exited with code ${f.code}${f.signal ? ' (signal ' + f.signal + ')' : ''}`);
    } else if (f.type === 'cortex.exec_started') {
      this.setStatus(`running (pid ${f.pid})`);
    } else if (f.type === 'cortex.error') {
      this.finish(`${f.code}: ${f.message}`);
    } else if (f.type === 'cortex.stdout' || f.type === 'cortex.stderr') {
      this.write(f.data);
    }
  }

  // The socket dropped: a command does not survive it.
  detached() { if (this.id) this.finish('disconnected'); }

  finish(why) {
    this.id = null;
    this.setStatus(why);
    document.querySelector('#term-start').disabled = false;
    document.querySelector('#term-stop').disabled = true;
  }

  dispose() {
    this.stop();
    this.pre.removeEventListener('keydown', this.onKey);
    this.pre.removeEventListener('paste', this.onPaste);
    window.removeEventListener('resize', this.onResize);
    this.finish('');
    this.pre.textContent = '';
  }

  setStatus(s) { this.status.textContent = s; }

  resize() {
    if (!this.id) return;
    const {cols, rows} = this.size();
    if (cols + 'x' + rows === this.dims) return;
    this.dims = cols + 'x' + rows;
    this.send({type: 'resize', id: this.id, cols, rows});
  }

  input(s) { if (this.id) this.send({type: 'stdin', id: this.id, data: s}); }

  key(ev) {
    if (!this.id || ev.metaKey) return;
    const keys = {Enter: '\r', Backspace: '\x7f', Tab: '\t', Escape: '\x1b', ArrowUp: '\x1b[A', ArrowDown: '\x1b[B',
      ArrowRight: '\x1b[C', ArrowLeft: '\x1b[D', Home: '\x1b[H', End: '\x1b[F', Delete: '\x1b[3~'};
    let s = null;
    if (ev.ctrlKey && ev.key.length === 1 && /[a-z@\[\\\]^_]/i.test(ev.key)) s = String.fromCharCode(ev.key.toUpperCase().charCodeAt(0) & 31);
    else if (keys[ev.key]) s = keys[ev.key];
    else if (ev.key.length === 1 && !ev.ctrlKey && !ev.altKey) s = ev.key;
    if (s === null) return;
    ev.preventDefault();
    this.input(s);
  }

  // ---- the screen

  line() { while (this.lines.length <= this.row) this.lines.push([]); return this.lines[this.row]; }

  put(ch) {
    const l = this.line();
    while (l.length < this.col) l.push(' ');
    l[this.col++] = ch;
  }

  csi(params, final) {
    const n = params.replace(/^\?/, '').split(';').map(x => parseInt(x, 10));
    const a = isNaN(n[0]) ? 1 : n[0];
    const l = this.line();
    switch (final) {
    case 'A': this.row = Math.max(0, this.row - a); break;
    case 'B': this.row += a; break;
    case 'C': this.col += a; break;
    case 'D': this.col = Math.max(0, this.col - a); break;
    case 'G': this.col = Math.max(0, a - 1); break;
    case 'H': case 'f': { // relative to the last screenful
      const top = Math.max(0, this.lines.length - this.size().rows);
      this.row = top + Math.max(0, (isNaN(n[0]) ? 1 : n[0]) - 1);
      this.col = Math.max(0, (isNaN(n[1]) ? 1 : n[1]) - 1);
      break;
    }
    case 'K':
      if (isNaN(n[0]) || n[0] === 0) l.length = Math.min(l.length, this.col);
      else if (n[0] === 2) l.length = 0;
      break;
    case 'J':
      if (n[0] === 2 || n[0] === 3) { this.reset(); }
      else if (isNaN(n[0]) || n[0] === 0) { l.length = Math.min(l.length, this.col); this.lines.length = this.row + 1; }
      break;
    case 'P': l.splice(this.col, a); break;
    case '@': l.splice(this.col, 0, ...' '.repeat(a)); break;
    default: break; // m (colours), h/l (modes), r, ...: ignored
    }
  }

  write(s) {
    for (const ch of s) {
      if (this.esc) {
        this.esc += ch;
        if (this.esc === '\x1b[' || this.esc === '\x1b]') continue;
        if (this.esc.startsWith('\x1b]')) { // OSC (a title): up to BEL or ST
          if (ch === '\x07' || this.esc.endsWith('\x1b\\')) this.esc = '';
          else if (this.esc.length > 512) this.esc = '';
          continue;
        }
        if (this.esc.startsWith('\x1b[')) {
          if (/[@-~]/.test(ch)) { this.csi(this.esc.slice(2, -1), ch); this.esc = ''; }
          else if (this.esc.length > 64) this.esc = '';
          continue;
        }
        this.esc = ''; // ESC + one char (charset selections and the like)
        continue;
      }
      if (ch === '\x1b') this.esc = ch;
      else if (ch === '\r') this.col = 0;
      else if (ch === '\n') { this.row++; this.line(); }
      else if (ch === '\b') this.col = Math.max(0, this.col - 1);
      else if (ch === '\t') { do this.put(' '); while (this.col % 8); }
      else if (ch === '\x07' || ch < ' ') { /* bell, other controls */ }
      else this.put(ch);
    }
    if (this.lines.length > MAX_LINES) {
      const cut = this.lines.length - MAX_LINES;
      this.lines.splice(0, cut);
      this.row = Math.max(0, this.row - cut);
    }
    this.render();
  }

  render() {
    this.pre.textContent = this.lines.map(l => l.join('')).join('\n');
    this.pre.scrollTop = this.pre.scrollHeight;
  }
}

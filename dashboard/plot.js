// plot.js — line plots on a <canvas>, drawn here (no library): time on x,
// one series per {label, color, dash, points:[[ms, value]...]}.  The number
// of points drawn is left in canvas.dataset.points (the e2e test reads it).
const PAD = {l: 52, r: 12, t: 26, b: 28};

function niceStep(range, n) {
  const raw = range / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map(m => m * p).find(s => s >= raw) || raw;
}

function timeLabel(ms, span) {
  const d = new Date(ms);
  const hm = d.toTimeString().slice(0, 5);
  return span > 2 * 86400e3 ? `${d.getMonth() + 1}/${d.getDate()} ${hm}` : span < 600e3 ? d.toTimeString().slice(0, 8) : hm;
}

export function drawPlot(canvas, {series, xmin, xmax, title, unit = '', integer = false, hline = null}) {
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth || canvas.width, H = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(W * dpr)) { canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr); }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#1b1f24';
  g.fillText(title || '', PAD.l, 14);
  const pts = series.flatMap(s => s.points);
  canvas.dataset.points = String(pts.length);
  let ymax = Math.max(1, hline ? hline.y : 0, ...pts.map(p => p[1])) * 1.1;
  const ystep = integer ? Math.max(1, Math.round(niceStep(ymax, 4))) : niceStep(ymax, 4);
  ymax = Math.ceil(ymax / ystep) * ystep;
  if (xmax <= xmin) xmax = xmin + 1;
  const X = (x) => PAD.l + (x - xmin) / (xmax - xmin) * (W - PAD.l - PAD.r);
  const Y = (y) => H - PAD.b - y / ymax * (H - PAD.t - PAD.b);
  // grid and axes
  g.strokeStyle = '#e3e7ec';
  g.fillStyle = '#5c6773';
  g.lineWidth = 1;
  g.textAlign = 'right';
  for (let y = 0; y <= ymax + 1e-9; y += ystep) {
    g.beginPath(); g.moveTo(PAD.l, Y(y)); g.lineTo(W - PAD.r, Y(y)); g.stroke();
    g.fillText((ystep < 1 ? y.toFixed(1) : Math.round(y)) + unit, PAD.l - 4, Y(y) + 4);
  }
  g.textAlign = 'center';
  const span = xmax - xmin;
  for (let i = 0; i <= 4; i++) {
    const x = xmin + span * i / 4;
    g.textAlign = i === 0 ? 'left' : i === 4 ? 'right' : 'center';
    g.fillText(timeLabel(x, span), X(x), H - PAD.b + 16);
  }
  if (hline) { // a reference level (a surface's first-token budget)
    g.strokeStyle = '#9aa4ae';
    g.setLineDash([2, 3]);
    g.beginPath(); g.moveTo(PAD.l, Y(hline.y)); g.lineTo(W - PAD.r, Y(hline.y)); g.stroke();
    g.setLineDash([]);
    g.fillStyle = '#5c6773';
    g.textAlign = 'right';
    g.fillText(hline.label, W - PAD.r, Y(hline.y) - 3);
  }
  // series
  for (const s of series) {
    g.strokeStyle = s.color;
    g.fillStyle = s.color;
    g.lineWidth = 2;
    g.setLineDash(s.dash ? [5, 4] : []);
    g.beginPath();
    s.points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
    g.setLineDash([]);
    for (const [x, y] of s.points) { g.beginPath(); g.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); g.fill(); }
  }
  // legend
  g.textAlign = 'left';
  let lx = PAD.l + g.measureText(title || '').width + 16;
  for (const s of series) {
    if (s.noLegend) continue;
    g.fillStyle = s.color;
    g.fillRect(lx, 7, 10, 8);
    g.fillStyle = '#1b1f24';
    g.fillText(s.label, lx + 13, 14);
    lx += g.measureText(s.label).width + 26;
  }
  if (!pts.length) {
    g.fillStyle = '#5c6773';
    g.textAlign = 'center';
    g.fillText('no data in this range', W / 2, H / 2);
  }
}

// p-th percentile of sorted numbers (nearest rank).
export function pct(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))];
}

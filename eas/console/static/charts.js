// Small SVG line charts for the console: no library, no canvas (text stays selectable,
// and every chart has a legend with the latest values that screen readers read).

const SVG = 'http://www.w3.org/2000/svg';
const W = 460, H = 170, LEFT = 46, RIGHT = 10, TOP = 8, BOTTOM = 20;

export const PALETTE = ['#1f5fbf', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bf3989', '#0a7f8f', '#57606a'];

/** A colour per HTTP status code: 2xx greens, 4xx ambers, 5xx reds, by code. */
export function codeColor(code) {
  const c = Number(code);
  const pick = (list) => list[c % list.length];
  if (c >= 200 && c < 300) return pick(['#1a7f37', '#2da44e', '#116329']);
  if (c >= 400 && c < 500) return pick(['#9a6700', '#bc4c00', '#d4a72c', '#7d4e00']);
  if (c >= 500) return pick(['#cf222e', '#a40e26', '#ff8182']);
  return '#57606a';
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const base = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * base >= v) return m * base;
  return 10 * base;
}

export function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (digits !== undefined) return v.toFixed(digits);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return String(Number(v.toFixed(2)));
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/**
 * Draw (or redraw) a chart into `figure`.
 * spec: {title, unit, series: [{name, color, dashed, points: [[t, v|null], ...], note}], t0, t1, integer}
 */
export function drawChart(figure, spec) {
  figure.replaceChildren();
  figure.classList.add('chart');
  const cap = document.createElement('figcaption');
  cap.textContent = spec.title + (spec.unit ? ` (${spec.unit})` : '');
  figure.append(cap);

  const t1 = spec.t1, t0 = Math.min(spec.t0, t1 - 60);
  let max = 0;
  for (const s of spec.series) for (const [, v] of s.points) if (v !== null && v > max) max = v;
  const top = spec.integer ? Math.max(1, Math.ceil(niceCeil(max))) : niceCeil(max);
  const x = (t) => LEFT + (W - LEFT - RIGHT) * ((t - t0) / (t1 - t0 || 1));
  const y = (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top);

  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    if (spec.integer && !Number.isInteger(v)) continue;
    svg.append(el('line', { class: 'grid', x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v) }));
    svg.append(el('text', { class: 'axis', x: LEFT - 6, y: y(v) + 3, 'text-anchor': 'end' }, fmt(v)));
  }
  svg.append(el('text', { class: 'axis', x: LEFT, y: H - 5 }, clock(t0)));
  svg.append(el('text', { class: 'axis', x: W - RIGHT, y: H - 5, 'text-anchor': 'end' }, clock(t1)));

  const summary = [];
  spec.series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    let segment = [];
    const flush = () => {
      if (segment.length === 1) {
        const [px, py] = segment[0];
        svg.append(el('circle', { cx: px, cy: py, r: 2.2, fill: color }));
      } else if (segment.length > 1) {
        const line = el('polyline', { points: segment.map((p) => p.join(',')).join(' '), stroke: color });
        if (s.dashed) line.setAttribute('stroke-dasharray', '5 3');
        svg.append(line);
      }
      segment = [];
    };
    for (const [t, v] of s.points) {
      if (t < t0) continue;
      if (v === null || v === undefined) { flush(); continue; }
      segment.push([x(t).toFixed(1), y(v).toFixed(1)]);
    }
    flush();
    const last = [...s.points].reverse().find((p) => p[1] !== null && p[1] !== undefined);
    summary.push({ name: s.name, color, value: last ? last[1] : null, note: s.note });
  });

  const legend = document.createElement('ul');
  legend.className = 'legend';
  for (const item of summary) {
    const li = document.createElement('li');
    li.dataset.series = item.name;
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = item.color;
    li.append(sw, `${item.name}: ${fmt(item.value)}${spec.unit ? ' ' + spec.unit : ''}`);
    if (item.note) {
      const note = document.createElement('span');
      note.className = 'muted note';
      note.textContent = ` · ${item.note}`;
      li.append(note);
    }
    legend.append(li);
  }
  if (!summary.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'no data yet';
    legend.append(li);
  }
  svg.setAttribute('aria-label', `${spec.title}: ` + (summary.length
    ? summary.map((s) => `${s.name} ${fmt(s.value)}${spec.unit ? ' ' + spec.unit : ''}`).join(', ')
    : 'no data yet'));
  figure.append(svg, legend);
}

// Charts drawn here as SVG: nothing is fetched, so they work on an air-gapped box.
import { h } from './dom.js';

// The SVG namespace is a name, not an address: nothing is ever fetched from it.
const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 760;
const HEIGHT = 200;
const PAD = { left: 64, right: 12, top: 10, bottom: 24 };
// Line series with at most this many points get a marker on each.
const MARKED_POINTS = 60;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'testid') el.dataset.testid = value;
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function shortTime(ms, spanMs) {
  const date = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  // Seconds only where the chart spans minutes (a device seen briefly).
  const seconds = spanMs < 15 * 60 * 1000 ? `:${pad(date.getSeconds())}` : '';
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}${seconds}`;
  return spanMs > 36 * 3600 * 1000 ? `${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock}` : clock;
}

// The frame every chart shares: y grid with labels (`format`), x labels at both ends and the
// middle. Returns {svg, x(ms), y(value)}.
function frame({ testid, label, t0, t1, max, format }) {
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const span = Math.max(1, t1 - t0);
  const top = max > 0 ? max : 1;
  const x = (ms) => PAD.left + ((ms - t0) / span) * plotW;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const svg = s('svg', { testid, viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': label, class: 'chart' },
    s('title', {}, label));
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    svg.append(s('line', { class: 'grid-line', x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value) }),
      s('text', { class: 'axis', x: PAD.left - 6, y: y(value) + 4, 'text-anchor': 'end' }, format(value)));
  }
  for (const [fraction, anchor] of [[0, 'start'], [0.5, 'middle'], [1, 'end']]) {
    svg.append(s('text', { class: 'axis', x: x(t0 + span * fraction), y: HEIGHT - 6, 'text-anchor': anchor },
      shortTime(t0 + span * fraction, span)));
  }
  return { svg, x, y };
}

// Lines over time. series: [{name, cls, points: [[ms, value]]}], one <path> each, plus a
// legend with each series' name.
export function lineChart({ testid, label, series, format }) {
  const all = series.flatMap((one) => one.points);
  const t0 = Math.min(...all.map(([t]) => t));
  const t1 = Math.max(...all.map(([t]) => t));
  const max = Math.max(0, ...all.map(([, v]) => v));
  const { svg, x, y } = frame({ testid, label, t0, t1, max, format });
  for (const one of series) {
    const d = one.points.map(([t, v], i) => `${i === 0 ? 'M' : 'L'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('path', { class: `series ${one.cls}`, d: one.points.length === 1 ? `${d} h2` : d },
      s('title', {}, one.name)));
    // Few points: mark each, so a lone bucket (a device seen for a minute) is visible.
    if (one.points.length <= MARKED_POINTS) {
      for (const [t, v] of one.points) {
        svg.append(s('circle', { class: `point ${one.cls}`, cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 3 }));
      }
    }
  }
  return h('figure', { class: 'chart-box' }, svg, legend(series));
}

// Stacked bars over time. buckets: [{start: ms, values: {key: n}}], keys drawn bottom up in
// the order given, each with class `cls(key)`.
export function stackedBars({ testid, label, buckets, keys, cls, bucketMs, format }) {
  const t0 = Math.min(...buckets.map((b) => b.start));
  const t1 = Math.max(...buckets.map((b) => b.start)) + bucketMs;
  const totals = buckets.map((b) => keys.reduce((sum, key) => sum + (b.values[key] ?? 0), 0));
  // Counts: an even top keeps the middle grid line on a whole number.
  const max = Math.ceil(Math.max(0, ...totals) / 2) * 2;
  const { svg, x, y } = frame({ testid, label, t0, t1, max, format });
  const width = Math.max(1, x(t0 + bucketMs) - x(t0) - 1);
  buckets.forEach((bucket) => {
    let base = 0;
    for (const key of keys) {
      const n = bucket.values[key] ?? 0;
      if (n === 0) continue;
      svg.append(s('rect', { class: `series-fill ${cls(key)}`, x: x(bucket.start).toFixed(1), width: width.toFixed(1),
        y: y(base + n).toFixed(1), height: (y(base) - y(base + n)).toFixed(1) },
      s('title', {}, `${new Date(bucket.start).toISOString()}: ${n} ${key}`)));
      base += n;
    }
  });
  return h('figure', { class: 'chart-box' }, svg, legend(keys.map((key) => ({ name: key, cls: cls(key) }))));
}

function legend(series) {
  return h('figcaption', { class: 'legend' }, series.map((one) => h('span', { class: 'legend-item' },
    h('span', { class: `swatch ${one.cls}`, 'aria-hidden': 'true' }), one.name)));
}

// The frame alone, saying `label` in the middle: a chart with nothing to plot since `since`.
export function emptyChart({ testid, label, since }) {
  const { svg } = frame({ testid, label, t0: since, t1: Date.now(), max: 0, format: () => '' });
  svg.append(s('text', { class: 'axis', x: WIDTH / 2, y: HEIGHT / 2, 'text-anchor': 'middle' }, label));
  return h('figure', { class: 'chart-box' }, svg);
}

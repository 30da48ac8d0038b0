/** Small hand-written SVG charts for the report: lines, stacked bars, grouped bars; linear or log scale. */

const COLORS = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];
const W = 720, H = 400, M = { left: 70, right: 170, top: 40, bottom: 50 };

/** A named series of y values (x is the index unless `x` is given). */
export interface Series {
  name: string;
  y: number[];
  x?: number[];
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-2) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

interface Scale {
  map: (v: number) => number;
  ticks: number[];
}

function scale(lo: number, hi: number, log: boolean, from: number, to: number): Scale {
  if (log) {
    const l0 = Math.floor(Math.log10(lo)), l1 = Math.ceil(Math.log10(hi));
    const span = Math.max(1, l1 - l0);
    return {
      map: (v) => from + ((Math.log10(Math.max(v, 10 ** l0)) - l0) / span) * (to - from),
      ticks: Array.from({ length: span + 1 }, (_, i) => 10 ** (l0 + i)),
    };
  }
  if (hi === lo) hi = lo + 1;
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 4));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= 6)!;
  const t0 = Math.floor(lo / nice) * nice, t1 = Math.ceil(hi / nice) * nice;
  const ticks: number[] = [];
  for (let t = t0; t <= t1 + nice / 2; t += nice) ticks.push(Number(t.toPrecision(6)));
  return { map: (v) => from + ((v - t0) / (t1 - t0)) * (to - from), ticks };
}

function frame(title: string, xLabel: string, yLabel: string, body: string, legend: string[]): string {
  const items = legend.map((name, i) =>
    `<rect x="${W - M.right + 15}" y="${M.top + i * 18}" width="12" height="12" fill="${
      COLORS[i % COLORS.length]
    }"/>` +
    `<text x="${W - M.right + 32}" y="${M.top + i * 18 + 10}" font-size="11">${esc(name)}</text>`
  ).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>
<text x="${(M.left + W - M.right) / 2}" y="${H - 10}" text-anchor="middle" font-size="12">${
    esc(xLabel)
  }</text>
<text x="16" y="${H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 16 ${H / 2})">${
    esc(yLabel)
  }</text>
${body}
${items}
</svg>
`;
}

function yAxis(s: Scale): string {
  return s.ticks.map((t) => {
    const y = s.map(t);
    return `<line x1="${M.left}" x2="${W - M.right}" y1="${y}" y2="${y}" stroke="#eee"/>` +
      `<text x="${M.left - 6}" y="${y + 4}" text-anchor="end" font-size="10">${fmt(t)}</text>`;
  }).join("");
}

/** Line chart of several series; `log` for a log-scale y axis; `marks` draws dashed vertical lines at x. */
export function lineChart(
  title: string,
  xLabel: string,
  yLabel: string,
  series: Series[],
  o: { log?: boolean; marks?: number[] } = {},
): string {
  const xs = series.flatMap((s) => s.x ?? s.y.map((_, i) => i));
  const ys = series.flatMap((s) => s.y).filter((v) => Number.isFinite(v) && (!o.log || v > 0));
  const sx = scale(Math.min(...xs), Math.max(...xs), false, M.left, W - M.right);
  const sy = scale(Math.min(...ys), Math.max(...ys), !!o.log, H - M.bottom, M.top);
  const xticks = sx.ticks.map((t) =>
    `<text x="${sx.map(t)}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="10">${fmt(t)}</text>`
  ).join("");
  const marks = (o.marks ?? []).map((x) =>
    `<line x1="${sx.map(x)}" x2="${sx.map(x)}" y1="${M.top}" y2="${
      H - M.bottom
    }" stroke="#999" stroke-dasharray="4 3"/>`
  ).join("");
  const lines = series.map((s, i) => {
    const pts = s.y.map((v, j) => [s.x ? s.x[j] : j, v]).filter(([, v]) =>
      Number.isFinite(v) && (!o.log || v > 0)
    );
    const d = pts.map(([x, v], j) => `${j ? "L" : "M"}${sx.map(x).toFixed(1)},${sy.map(v).toFixed(1)}`).join(
      "",
    );
    return `<path d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.8"/>`;
  }).join("");
  return frame(title, xLabel, yLabel, yAxis(sy) + xticks + marks + lines, series.map((s) => s.name));
}

/** Stacked bars: one bar per label, one segment per part. */
export function stackedBars(title: string, yLabel: string, labels: string[], parts: Series[]): string {
  const totals = labels.map((_, i) => parts.reduce((s, p) => s + p.y[i], 0));
  const sy = scale(0, Math.max(...totals), false, H - M.bottom, M.top);
  const bw = ((W - M.left - M.right) / labels.length) * 0.6;
  const bars = labels.map((label, i) => {
    const x = M.left + ((i + 0.5) * (W - M.left - M.right)) / labels.length - bw / 2;
    let acc = 0;
    const segs = parts.map((p, k) => {
      const y0 = sy.map(acc), y1 = sy.map(acc + p.y[i]);
      acc += p.y[i];
      return `<rect x="${x.toFixed(1)}" y="${y1.toFixed(1)}" width="${bw.toFixed(1)}" height="${
        Math.max(0, y0 - y1).toFixed(1)
      }" fill="${COLORS[k % COLORS.length]}"/>`;
    }).join("");
    return segs +
      `<text x="${(x + bw / 2).toFixed(1)}" y="${H - M.bottom + 14}" text-anchor="middle" font-size="10">${
        esc(label)
      }</text>`;
  }).join("");
  return frame(title, "", yLabel, yAxis(sy) + bars, parts.map((p) => p.name));
}

/** Grouped bars (one group per label, one bar per series), optionally on a log scale. */
export function groupedBars(
  title: string,
  yLabel: string,
  labels: string[],
  series: Series[],
  log = false,
): string {
  const ys = series.flatMap((s) => s.y).filter((v) => Number.isFinite(v) && (!log || v > 0));
  const sy = scale(log ? Math.min(...ys) : 0, Math.max(...ys), log, H - M.bottom, M.top);
  const gw = (W - M.left - M.right) / labels.length;
  const bw = (gw * 0.8) / series.length;
  const base = H - M.bottom;
  const bars = labels.map((label, i) => {
    const g = series.map((s, k) => {
      const v = s.y[i];
      if (!Number.isFinite(v) || (log && v <= 0)) return "";
      const x = M.left + i * gw + gw * 0.1 + k * bw;
      const y = sy.map(v);
      return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(bw * 0.9).toFixed(1)}" height="${
        (base - y).toFixed(1)
      }" fill="${COLORS[k % COLORS.length]}"/>`;
    }).join("");
    return g +
      `<text x="${(M.left + (i + 0.5) * gw).toFixed(1)}" y="${
        H - M.bottom + 14
      }" text-anchor="middle" font-size="10">${esc(label)}</text>`;
  }).join("");
  return frame(title, "", yLabel, yAxis(sy) + bars, series.map((s) => s.name));
}

// Time-series charts drawn as inline SVG by this module (no chart library): line + area per
// series, a value axis with units, a time axis, a legend, and the values of the nearest bucket
// under the pointer. Nothing is built from markup strings: every label is a text node.
import {bytes} from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const PAD = {left: 64, right: 16, top: 12, bottom: 28};
export const COLORS = ["#2b5fab", "#d9730d", "#067647", "#9e2f96", "#b42318"];

let styled = false;
export function ensureStyle() {
  if (styled) return;
  styled = true;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = "/static/lib/chart.css";
  document.head.append(link);
}

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A value with its unit: "bytes" as KiB/MiB/GiB, counts with at most two decimals. */
export function formatValue(value, unit) {
  if (unit === "bytes") return bytes(Math.round(value));
  // two significant digits below 1 (a short session averaged over a long bucket is small, not 0)
  const abs = Math.abs(value);
  const shown = abs === 0 ? 0 : abs < 1 ? Number(value.toPrecision(2)) : Math.round(value * 100) / 100;
  return unit && unit !== "count" ? `${shown} ${unit}` : String(shown);
}

/** 1, 2 or 5 times a power of ten (or of 1024 for bytes), at or above `max / steps`. */
function niceStep(max, steps, unit) {
  const raw = max / steps;
  if (raw <= 0) return 1;
  if (unit === "bytes" && raw >= 1024) {
    const power = 1024 ** Math.floor(Math.log(raw) / Math.log(1024));
    for (const m of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]) if (m * power >= raw) return m * power;
  }
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function timeLabel(seconds, span) {
  const d = new Date(seconds * 1000);
  if (span <= 2 * 86400) return d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  return d.toLocaleDateString([], {month: "short", day: "numeric"});
}

function whenLabel(seconds) {
  return new Date(seconds * 1000).toLocaleString([], {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"});
}

/**
 * timeChart({id, title, unit, series: [{label, points: [{t, v}]}], width, height})
 * `t` in Unix seconds (the bucket's start), every series on the same buckets. Answers a
 * <figure class="chart"> whose data-nonzero counts the buckets with a value above 0.
 */
export function timeChart({id, title, unit = "count", series, width = 640, height = 200}) {
  ensureStyle();
  const times = series[0]?.points.map((p) => p.t) || [];
  const n = times.length;
  const max = Math.max(0, ...series.flatMap((sr) => sr.points.map((p) => p.v)));
  const step = niceStep(max || 1, 4, unit);
  const top = Math.max(step, Math.ceil((max || 1) / step) * step);
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (n <= 1 ? plotW / 2 : (i / (n - 1)) * plotW);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;

  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg",
    "aria-label": `${title}: highest ${formatValue(max, unit)}`});
  svg.append(s("title", {}, title));
  const grid = s("g", {class: "chart-grid"});
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.append(s("line", {x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v)}));
    grid.append(s("text", {x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "chart-tick"}, formatValue(v, unit)));
  }
  const span = n > 1 ? times[n - 1] - times[0] : 0;
  const ticks = Math.min(6, n);
  for (let k = 0; k < ticks; k += 1) {
    const i = ticks === 1 ? 0 : Math.round((k * (n - 1)) / (ticks - 1));
    grid.append(s("text", {x: x(i), y: height - 8, "text-anchor": k === 0 ? "start" : k === ticks - 1 ? "end" : "middle",
      class: "chart-tick"}, timeLabel(times[i], span)));
  }
  svg.append(grid);

  series.forEach((sr, idx) => {
    const color = sr.color || COLORS[idx % COLORS.length];
    if (!n) return;
    const line = sr.points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
    const area = `${line}L${x(n - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
    svg.append(s("path", {d: area, fill: color, "fill-opacity": 0.15, stroke: "none", class: "chart-area"}));
    svg.append(s("path", {d: line, fill: "none", stroke: color, "stroke-width": 1.5, class: "chart-line",
      "data-series": sr.label}));
  });

  // Hover: a cursor line and the nearest bucket's values.
  const cursor = s("line", {y1: PAD.top, y2: PAD.top + plotH, class: "chart-cursor", visibility: "hidden"});
  const overlay = s("rect", {x: PAD.left, y: PAD.top, width: plotW, height: plotH, fill: "transparent", class: "chart-overlay"});
  svg.append(cursor, overlay);
  const tip = document.createElement("div");
  tip.className = "chart-tip";
  tip.hidden = true;
  function show(ev) {
    if (!n) return;
    const box = svg.getBoundingClientRect();
    const px = ((ev.clientX - box.left) / box.width) * width;
    const i = Math.max(0, Math.min(n - 1, Math.round(((px - PAD.left) / plotW) * (n - 1))));
    cursor.setAttribute("x1", x(i));
    cursor.setAttribute("x2", x(i));
    cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(
      Object.assign(document.createElement("strong"), {textContent: whenLabel(times[i])}),
      ...series.map((sr) => Object.assign(document.createElement("span"),
        {textContent: `${sr.label}: ${formatValue(sr.points[i].v, unit)}`})));
    tip.hidden = false;
    const left = (x(i) / width) * box.width;
    tip.style.left = `${Math.min(left + 8, box.width - 180)}px`;
    tip.dataset.index = String(i);
  }
  overlay.addEventListener("mousemove", show);
  overlay.addEventListener("mouseleave", () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });

  const legend = document.createElement("div");
  legend.className = "chart-legend";
  series.forEach((sr, idx) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = sr.color || COLORS[idx % COLORS.length];
    item.append(swatch, sr.label);
    legend.append(item);
  });

  const figure = document.createElement("figure");
  figure.className = "chart";
  if (id) figure.id = id;
  figure.dataset.points = String(n);
  figure.dataset.nonzero = String(series.reduce((c, sr) => c + sr.points.filter((p) => p.v > 0).length, 0));
  figure.dataset.max = String(max);
  // the first bucket holding the highest value (tests hover there)
  figure.dataset.maxIndex = String(Math.max(0, series[0]?.points.findIndex((p) => p.v === max) ?? 0));
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  const plot = document.createElement("div");
  plot.className = "chart-plot";
  plot.append(svg, tip);
  figure.append(caption, plot, legend);
  return figure;
}

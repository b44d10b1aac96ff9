// Numbers and dates for people.
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function bytes(n) {
  let value = Number(n);
  if (!Number.isFinite(value)) return String(n ?? "");
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${UNITS[unit]}`;
}

/** A slot map ({"cpu": "1", "mem": "268435456", "cuda.shares": "0.5"}) as "cpu 1 · mem 256 MiB". */
export function slots(map) {
  if (typeof map === "string") { try { map = JSON.parse(map); } catch { return map; } }
  if (!map || typeof map !== "object") return "";
  return Object.entries(map)
    .filter(([, v]) => v !== null && v !== undefined && String(v) !== "0")
    .map(([k, v]) => `${k} ${k === "mem" || k.endsWith(".mem") ? bytes(v) : v}`)
    .join(" · ");
}

export function when(value) {
  if (!value) return "";
  const date = new Date(String(value).replace(" ", "T"));
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function ago(value) {
  if (!value) return "";
  const date = new Date(String(value).replace(" ", "T"));
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** "1g", "512m", "1.5 GiB" -> bytes as a string the manager takes ("512m" as is). */
export function memInput(text) {
  return String(text).trim().replace(/\s+/g, "").replace(/i?b$/i, "").toLowerCase();
}

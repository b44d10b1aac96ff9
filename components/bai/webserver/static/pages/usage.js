// Usage: charts of the caller's resource use over time (the manager's /resource/stats/user/month)
// and, for admins, of a project's or of everyone's in their scope (/resource/stats/project/month,
// /resource/stats/admin/month). Each figure is the average occupied over a bucket.
import {call, gql} from "../lib/api.js";
import {isAdmin} from "../lib/auth.js";
import {formatValue, timeChart} from "../lib/chart.js";
import {clear, h, showProblem} from "../lib/dom.js";
import {bytes, when} from "../lib/format.js";

const RANGES = {
  "24h": {label: "Last 24 hours (15-minute buckets)", interval: "15m", days: 1},
  "7d": {label: "Last 7 days (hourly buckets)", interval: "1h", days: 7},
  "30d": {label: "Last 30 days (daily buckets)", interval: "1d", days: 30},
};
const METRICS = [
  {key: "cpu_allocated", title: "CPU cores", unit: "count"},
  {key: "mem_allocated", title: "Memory", unit: "bytes"},
  {key: "gpu_allocated", title: "GPU (cuda slots)", unit: "count"},
  {key: "num_sessions", title: "Sessions", unit: "count"},
];

function points(series, key) {
  return series.map((b) => ({t: b.date, v: Number(b[key]?.value) || 0}));
}

function charts(prefix, label, series) {
  return h("div", {class: "charts", id: `${prefix}-charts`}, METRICS.map((m) => timeChart({
    id: `${prefix}-${m.key}`, title: m.title, unit: m.unit, series: [{label, points: points(series, m.key)}],
  })));
}

function totals(series) {
  const active = series.filter((b) => b.num_sessions.value > 0).length;
  const peak = Math.max(0, ...series.map((b) => b.cpu_allocated.value));
  return `${active} of ${series.length} buckets with sessions; peak ${formatValue(peak, "count")} CPU cores on average over a bucket`;
}

const MAX_ROWS = 50;

function ymd(date) {
  return date.toISOString().slice(0, 10).replaceAll("-", "");
}

/** The kernels that ran in the period, per project (GET /resource/usage/period; the manager scopes it). */
async function report(days, signal) {
  const end = new Date();
  const start = new Date(end.getTime() - (days - 1) * 86400_000);
  const groups = await call("GET", "/resource/usage/period", {query: {start_date: ymd(start), end_date: ymd(end)}, signal});
  const kernels = groups.flatMap((g) => g.c_infos.map((c) => ({...c, project: g.g_name})))
    .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  const rows = kernels.slice(0, MAX_ROWS).map((c) => h("tr", {dataset: {kernel: c.id}},
    h("td", {}, c.name || ""), h("td", {}, c.project), h("td", {}, c.email || ""), h("td", {class: "small"}, c.image_name || ""),
    h("td", {}, when(c.created_at)), h("td", {}, c.terminated_at === "None" ? c.status : when(c.terminated_at)),
    h("td", {}, formatValue(c.cpu_allocated, "count")), h("td", {}, bytes(c.mem_allocated)),
    h("td", {}, c.gpu_allocated ? formatValue(c.gpu_allocated, "count") : "")));
  const note = kernels.length > MAX_ROWS ? h("p", {class: "muted small"}, `The newest ${MAX_ROWS} of ${kernels.length}.`) : null;
  return [note, h("table", {class: "table", id: "usage-report"},
    h("thead", {}, h("tr", {}, ["Session", "Project", "Owner", "Image", "Started", "Ended", "CPU", "Memory", "GPU"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {class: "empty"}, h("td", {colspan: 9}, "No sessions in this period."))))];
}

export async function render({main, signal, user, query, navigate}) {
  const rangeKey = RANGES[query.get("range")] ? query.get("range") : "24h";
  const range = RANGES[rangeKey];
  const problem = h("div", {class: "problem-slot", id: "usage-problem"});
  const select = h("select", {id: "usage-range", name: "range"},
    Object.entries(RANGES).map(([k, r]) => h("option", {value: k, selected: k === rangeKey}, r.label)));
  select.addEventListener("change", () => navigate(`/usage?range=${select.value}`));
  const mine = h("section", {id: "usage-mine"}, h("p", {class: "muted"}, "Loading…"));
  main.append(h("div", {class: "page-head"}, h("h1", {}, "Usage")),
    h("div", {class: "toolbar"}, h("label", {class: "inline"}, "Period ", select)), problem, mine);

  const qs = {interval: range.interval, days: range.days};
  try {
    const series = await call("GET", "/resource/stats/user/month", {query: qs, signal});
    clear(mine, h("h2", {}, "Your use"), h("p", {class: "muted small", id: "usage-mine-summary"}, totals(series)),
      charts("mine", "you", series));
  } catch (err) {
    if (err?.name === "AbortError") return;
    clear(mine);
    showProblem(problem, err);
  }
  const sessions = h("section", {id: "usage-sessions"});
  async function showReport() {
    main.append(sessions);
    try {
      clear(sessions, h("h2", {}, isAdmin(user) ? "Sessions in this period (your scope)" : "Your sessions in this period"),
        await report(range.days, signal));
    } catch (err) {
      if (err?.name !== "AbortError") showProblem(problem, err);
    }
  }
  if (!isAdmin(user)) {
    await showReport();
    return;
  }

  // Admins: a project of their scope, or everyone in it.
  const scoped = h("section", {id: "usage-scope"});
  const picker = h("select", {id: "usage-project", name: "project"}, h("option", {value: ""}, "Everyone (your scope)"));
  const target = h("div", {id: "usage-scope-charts"});
  main.append(scoped);
  clear(scoped, h("h2", {}, "Projects"), h("div", {class: "toolbar"}, h("label", {class: "inline"}, "Project ", picker)), target);
  try {
    const data = await gql("query { groups { id name domain_name } }", {}, {signal});
    for (const g of data.groups || []) picker.append(h("option", {value: g.id}, `${g.name} (${g.domain_name})`));
  } catch (err) {
    if (err?.name === "AbortError") return;
    showProblem(problem, err);
  }
  async function load() {
    clear(target, h("p", {class: "muted"}, "Loading…"));
    try {
      const project = picker.value;
      const series = project
        ? await call("GET", "/resource/stats/project/month", {query: {...qs, project_id: project}, signal})
        : await call("GET", "/resource/stats/admin/month", {query: qs, signal});
      const label = project ? picker.selectedOptions[0].textContent : "everyone";
      clear(target, h("p", {class: "muted small", id: "usage-scope-summary"}, totals(series)), charts("scope", label, series));
    } catch (err) {
      if (err?.name === "AbortError") return;
      clear(target);
      showProblem(problem, err);
    }
  }
  picker.addEventListener("change", load);
  await load();
  await showReport();
}

// Admin: agents and their utilisation, refreshed every few seconds while the page is open:
// the share of each slot that sessions occupy, and what their running containers use now (the
// sum of the kernels' live_stat the agents report at each heartbeat; the agent-level
// cpu_cur_pct / mem_cur_bytes / live_stat too where the manager has them). Schedulable can be
// switched off.
import {gql} from "../../lib/api.js";
import {clear, h} from "../../lib/dom.js";
import {bytes, ago} from "../../lib/format.js";
import {actionButton, adminHead, emptyRow, mutate} from "./common.js";

const REFRESH_MS = 5000;
const LIST_Q = `query($status: String) { agent_list(limit: 100, offset: 0, status: $status, order: "id") {
  total_count items { id status region scaling_group schedulable addr version first_contact container_count
    available_slots occupied_slots cpu_cur_pct mem_cur_bytes live_stat } } }`;
// The first 100 running sessions' containers (superadmins and monitors see everyone's).
const LIVE_Q = `query { compute_session_list(limit: 100, offset: 0, status: "RUNNING") {
  items { containers { agent live_stat } } } }`;
const MODIFY_Q = `mutation($id: String!, $props: ModifyAgentInput!) { modify_agent(id: $id, props: $props) { ok msg } }`;

function json(value) {
  if (!value) return {};
  if (typeof value === "object") return value;
  try { return JSON.parse(value) || {}; } catch { return {}; }
}

function meter(used, total, label) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const bar = h("span", {class: "meter", title: `${Math.round(share * 100)}%`}, h("i", {}));
  bar.firstChild.style.width = `${(share * 100).toFixed(1)}%`;
  return h("div", {class: "small", dataset: {slot: label, share: share.toFixed(3)}}, bar, label);
}

function utilisation(agent) {
  const avail = json(agent.available_slots);
  const used = json(agent.occupied_slots);
  return Object.keys(avail).sort((a, b) => (a === "cpu" ? -2 : a === "mem" ? -1 : 0) - (b === "cpu" ? -2 : b === "mem" ? -1 : 0))
    .map((slot) => {
      const a = Number(avail[slot]) || 0;
      const u = Number(used[slot]) || 0;
      const text = slot === "mem" || slot.endsWith(".mem") ? `${slot} ${bytes(u)} / ${bytes(a)}` : `${slot} ${u} / ${a}`;
      return meter(u, a, text);
    });
}

/** Per agent id: {cpu (percent of one core, summed), mem (bytes), containers} of its running kernels. */
function containerUse(sessions) {
  const use = {};
  for (const s of sessions) {
    for (const c of s.containers || []) {
      if (!c.agent) continue;
      const stat = json(c.live_stat);
      const u = use[c.agent] || (use[c.agent] = {cpu: 0, mem: 0, containers: 0, measured: 0});
      u.containers += 1;
      if (stat.cpu_util || stat.mem) u.measured += 1;
      u.cpu += Number(stat.cpu_util?.current) || 0;
      u.mem += Number(stat.mem?.current) || 0;
    }
  }
  return use;
}

function live(agent, use) {
  const parts = [];
  if (use?.measured) parts.push(`containers: CPU ${use.cpu.toFixed(1)}% of a core · memory ${bytes(use.mem)}`);
  // the node as a whole, where the manager reports it
  const node = json(agent.live_stat).node || {};
  const cpu = agent.cpu_cur_pct ?? node.cpu_util?.pct;
  const mem = agent.mem_cur_bytes ?? node.mem?.current;
  if (cpu !== null && cpu !== undefined) parts.push(`node CPU ${Number(cpu).toFixed(1)}%`);
  if (mem !== null && mem !== undefined) parts.push(`node memory ${bytes(mem)}`);
  return parts.length ? parts.join(" · ") : "—";
}

export async function render({main, signal}) {
  const problem = adminHead(main, "/admin/agents", "Agents");
  const status = h("select", {id: "agent-status", name: "status"},
    ["ALIVE", "LOST", "TERMINATED", "ALIVE,LOST,TERMINATED"].map((s) => h("option", {value: s}, s === "ALIVE,LOST,TERMINATED" ? "any" : s)));
  const stamp = h("span", {class: "muted small", id: "agents-refreshed"});
  const rows = h("tbody", {id: "agent-rows"});
  main.append(h("div", {class: "toolbar"}, h("label", {class: "inline"}, "Status ", status), stamp),
    h("table", {class: "table", id: "agent-list"},
      h("thead", {}, h("tr", {}, ["Agent", "Status", "Resource group", "Allocated", "Live", "Containers", "Schedulable"].map((t) => h("th", {}, t)))),
      rows));

  function row(a, use) {
    const toggle = actionButton(a.schedulable ? "Exclude" : "Include", async () => {
      await mutate("modify_agent", MODIFY_Q, {id: a.id, props: {schedulable: !a.schedulable}}, {signal});
      await load();
    }, problem, {dataset: {action: "schedulable"}});
    return h("tr", {dataset: {agent: a.id, status: a.status}},
      h("td", {}, a.id, h("div", {class: "muted small"}, `${a.addr || ""} · ${a.version || ""} · since ${ago(a.first_contact)}`)),
      h("td", {}, h("span", {class: `status status-${String(a.status).toLowerCase() === "alive" ? "running" : "error"}`}, a.status)),
      h("td", {}, a.scaling_group || ""), h("td", {class: "utilisation"}, utilisation(a)), h("td", {class: "small live", dataset: {measured: String(use?.measured || 0)}}, live(a, use)),
      h("td", {}, String(a.container_count ?? "")), h("td", {}, a.schedulable ? "yes " : "no ", toggle));
  }

  let refreshes = 0;
  async function load() {
    const [agents, running] = await Promise.all([gql(LIST_Q, {status: status.value}, {signal}), gql(LIVE_Q, {}, {signal})]);
    const list = agents.agent_list;
    const use = containerUse(running.compute_session_list?.items || []);
    clear(rows, list.items.length ? list.items.map((a) => row(a, use[a.id])) : emptyRow(7, "No agents."));
    refreshes += 1;
    stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    stamp.dataset.refreshes = String(refreshes);
  }
  status.addEventListener("change", () => load().catch(() => null));
  await load();
  // Refresh while the page is shown; leaving it (signal) stops the timer.
  const timer = setInterval(() => {
    load().catch((err) => { if (err?.name !== "AbortError") clear(problem, h("p", {class: "problem"}, err.title || err.message)); });
  }, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

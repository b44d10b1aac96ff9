// Admin: agents and their utilisation, refreshed every few seconds while the page is open:
// the share of each slot that sessions occupy, and what their running containers use now (the
// sum of the kernels' live_stat the agents report at each heartbeat; the agent-level
// cpu_cur_pct / mem_cur_bytes / live_stat too where the manager has them). Superadmins can switch
// schedulable off and move an agent to another resource group (modify_agent; the agent switches
// and keeps the group in its agent.toml, or the manager answers why not, shown inline).
import {ApiError, gql} from "../../lib/api.js";
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
const GROUPS_Q = `query { scaling_groups { name is_active } }`;
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

export async function render({main, signal, user}) {
  const problem = adminHead(main, "/admin/agents", "Agents");
  // The manager lets superadmins only change agents: others see no controls.
  const canChange = user?.role === "superadmin";
  const notice = h("div", {id: "agents-notice", role: "status"});
  main.append(notice);
  let groups = [];
  const chosen = new Map(); // agent id -> the group picked but not moved to yet (kept across refreshes)
  let busy = 0;
  const act = (fn) => async () => {
    busy += 1;
    clear(notice);
    try { await fn(); } finally { busy -= 1; }
  };
  const status = h("select", {id: "agent-status", name: "status"},
    ["ALIVE", "LOST", "TERMINATED", "ALIVE,LOST,TERMINATED"].map((s) => h("option", {value: s}, s === "ALIVE,LOST,TERMINATED" ? "any" : s)));
  const stamp = h("span", {class: "muted small", id: "agents-refreshed"});
  const rows = h("tbody", {id: "agent-rows"});
  main.append(h("div", {class: "toolbar"}, h("label", {class: "inline"}, "Status ", status), stamp),
    h("table", {class: "table", id: "agent-list"},
      h("thead", {}, h("tr", {}, ["Agent", "Status", "Resource group", "Allocated", "Live", "Containers", "Schedulable"].map((t) => h("th", {}, t)))),
      rows));

  function row(a, use) {
    const toggle = canChange ? actionButton(a.schedulable ? "Exclude" : "Include", act(async () => {
      await mutate("modify_agent", MODIFY_Q, {id: a.id, props: {schedulable: !a.schedulable}}, {signal});
      clear(notice, h("p", {class: "notice"}, `${a.id} is ${a.schedulable ? "no longer" : "now"} schedulable.`));
      await load();
    }), problem, {dataset: {action: "schedulable"}}) : null;
    const group = canChange ? moveControl(a) : null;
    return h("tr", {dataset: {agent: a.id, status: a.status}},
      h("td", {}, a.id, h("div", {class: "muted small"}, `${a.addr || ""} · ${a.version || ""} · since ${ago(a.first_contact)}`)),
      h("td", {}, h("span", {class: `status status-${String(a.status).toLowerCase() === "alive" ? "running" : "error"}`}, a.status)),
      h("td", {class: "agent-group"}, h("div", {}, a.scaling_group || ""), group), h("td", {class: "utilisation"}, utilisation(a)), h("td", {class: "small live", dataset: {measured: String(use?.measured || 0)}}, live(a, use)),
      h("td", {}, String(a.container_count ?? "")), h("td", {}, a.schedulable ? "yes " : "no ", toggle));
  }

  function moveControl(a) {
    const pick = chosen.get(a.id) ?? a.scaling_group;
    // A group picked earlier stays offered even when it has gone since (the manager says why not).
    const names = [...new Set([...groups.map((g) => g.name), pick].filter(Boolean))];
    const select = h("select", {name: "scaling_group", class: "agent-group-select", "aria-label": `Resource group of ${a.id}`},
      names.map((n) => h("option", {value: n, selected: n === pick}, n + (groups.some((g) => g.name === n && !g.is_active) ? " (inactive)" : ""))));
    select.addEventListener("change", () => {
      if (select.value === a.scaling_group) chosen.delete(a.id); else chosen.set(a.id, select.value);
    });
    const move = actionButton("Move", act(async () => {
      // The pick, not the select: a refresh may have replaced the select while it was being set.
      const target = chosen.get(a.id) ?? select.value;
      if (target === a.scaling_group) throw new ApiError(0, {title: "Pick another resource group", detail: `${a.id} is in ${target} already.`});
      await mutate("modify_agent", MODIFY_Q, {id: a.id, props: {scaling_group: target}}, {signal});
      chosen.delete(a.id);
      clear(notice, h("p", {class: "notice"}, `${a.id} moved to ${target}.`));
      await load();
    }), problem, {dataset: {action: "move"}});
    return h("div", {class: "inline-form agent-move"}, select, move);
  }

  let refreshes = 0;
  async function load() {
    const [agents, running, sg] = await Promise.all([gql(LIST_Q, {status: status.value}, {signal}), gql(LIVE_Q, {}, {signal}),
      canChange ? gql(GROUPS_Q, {}, {signal}) : null]);
    groups = sg?.scaling_groups || [];
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
    // Not while a change is in flight, nor under an open group list (a repaint would close it).
    if (busy || (document.activeElement?.tagName === "SELECT" && rows.contains(document.activeElement))) return;
    load().catch((err) => { if (err?.name !== "AbortError") clear(problem, h("p", {class: "problem"}, err.title || err.message)); });
  }, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

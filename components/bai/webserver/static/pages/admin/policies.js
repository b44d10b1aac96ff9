// Admin: resource policies of keypairs (slots, sessions, idle timeout), users and projects
// (folder count and quota). Creating and deleting them is for superadmins; the manager says so.
import {gql} from "../../lib/api.js";
import {clear, confirmButton, h, once} from "../../lib/dom.js";
import {bytes, memInput, slots} from "../../lib/format.js";
import {adminHead, emptyRow, field, mutate, numberOrNull, submitForm} from "./common.js";

const KP_Q = `query { keypair_resource_policies { name default_for_unspecified total_resource_slots max_session_lifetime
  max_concurrent_sessions max_containers_per_session idle_timeout } }`;
const KP_CREATE = `mutation($name: String!, $props: CreateKeyPairResourcePolicyInput!) {
  create_keypair_resource_policy(name: $name, props: $props) { ok msg } }`;
const KP_DELETE = `mutation($name: String!) { delete_keypair_resource_policy(name: $name) { ok msg } }`;
const SCOPED = {
  user: {list: "user_resource_policies", create: "create_user_resource_policy", del: "delete_user_resource_policy",
         input: "CreateUserResourcePolicyInput", title: "User policies (folders)"},
  project: {list: "project_resource_policies", create: "create_project_resource_policy", del: "delete_project_resource_policy",
            input: "CreateProjectResourcePolicyInput", title: "Project policies (folders)"},
};

function deleteButton(field, query, name, problem, reload, signal) {
  return confirmButton("Delete", "Really delete?", (btn) => once(btn, problem, async () => {
    await mutate(field, query, {name}, {signal});
    await reload();
  }), {dataset: {action: "delete"}});
}

export async function render({main, signal}) {
  const problem = adminHead(main, "/admin/policies", "Resource policies");

  // --- keypair policies
  const kpRows = h("tbody", {id: "kp-policy-rows"});
  const kpName = h("input", {name: "name", id: "new-kp-policy-name", required: true, maxlength: 256});
  const kpDefault = h("select", {name: "default_for_unspecified", id: "new-kp-policy-default"},
    h("option", {value: "LIMITED"}, "LIMITED"), h("option", {value: "UNLIMITED"}, "UNLIMITED"));
  const kpCpu = h("input", {name: "cpu", id: "new-kp-policy-cpu", inputmode: "decimal", placeholder: "e.g. 4"});
  const kpMem = h("input", {name: "mem", id: "new-kp-policy-mem", placeholder: "e.g. 8g"});
  const kpSessions = h("input", {name: "max_concurrent_sessions", id: "new-kp-policy-sessions", type: "number", min: 0, value: "5", required: true});
  const kpContainers = h("input", {name: "max_containers_per_session", type: "number", min: 1, value: "1", required: true});
  const kpIdle = h("input", {name: "idle_timeout", id: "new-kp-policy-idle", type: "number", min: 0, value: "3600", required: true});
  const kpForm = submitForm("new-kp-policy-form", [field("Name", kpName), field("Slots not listed", kpDefault),
    field("CPU cores", kpCpu), field("Memory", kpMem), field("Concurrent sessions", kpSessions),
    field("Containers per session", kpContainers), field("Idle timeout (s)", kpIdle)], "Create keypair policy", async () => {
    const total = {};
    if (kpCpu.value.trim()) total.cpu = kpCpu.value.trim();
    if (kpMem.value.trim()) total.mem = memInput(kpMem.value);
    await mutate("create_keypair_resource_policy", KP_CREATE, {name: kpName.value.trim(), props: {
      default_for_unspecified: kpDefault.value, total_resource_slots: JSON.stringify(total),
      max_concurrent_sessions: Number(kpSessions.value), max_containers_per_session: Number(kpContainers.value),
      idle_timeout: Number(kpIdle.value)}}, {signal});
    kpName.value = "";
    await loadKeypair();
  }, problem);
  main.append(h("h2", {}, "Keypair policies"), kpForm,
    h("table", {class: "table", id: "kp-policy-list"},
      h("thead", {}, h("tr", {}, ["Name", "Slots", "Not listed", "Sessions", "Containers", "Idle timeout", "Lifetime", ""].map((t) => h("th", {}, t)))),
      kpRows));

  async function loadKeypair() {
    const list = (await gql(KP_Q, {}, {signal})).keypair_resource_policies || [];
    clear(kpRows, list.length ? list.map((p) => h("tr", {dataset: {policy: p.name}},
      h("td", {}, p.name), h("td", {}, slots(p.total_resource_slots) || "—"), h("td", {}, p.default_for_unspecified),
      h("td", {}, String(p.max_concurrent_sessions)), h("td", {}, String(p.max_containers_per_session)),
      h("td", {}, `${p.idle_timeout} s`), h("td", {}, p.max_session_lifetime ? `${p.max_session_lifetime} s` : "unlimited"),
      h("td", {class: "actions"}, deleteButton("delete_keypair_resource_policy", KP_DELETE, p.name, problem, loadKeypair, signal))))
      : emptyRow(8, "No keypair policies."));
  }

  // --- user and project policies
  const loaders = [loadKeypair];
  for (const [kind, spec] of Object.entries(SCOPED)) {
    const rows = h("tbody", {id: `${kind}-policy-rows`});
    const name = h("input", {name: "name", id: `new-${kind}-policy-name`, required: true, maxlength: 256});
    const count = h("input", {name: "max_vfolder_count", type: "number", min: 0, placeholder: "0 = unlimited"});
    const quota = h("input", {name: "max_quota_scope_size", placeholder: "e.g. 10g; empty = unlimited"});
    const createQ = `mutation($name: String!, $props: ${spec.input}!) { ${spec.create}(name: $name, props: $props) { ok msg } }`;
    const deleteQ = `mutation($name: String!) { ${spec.del}(name: $name) { ok msg } }`;
    const listQ = `query { ${spec.list} { name max_vfolder_count max_quota_scope_size } }`;
    const load = async () => {
      const list = (await gql(listQ, {}, {signal}))[spec.list] || [];
      clear(rows, list.length ? list.map((p) => h("tr", {dataset: {policy: p.name}},
        h("td", {}, p.name), h("td", {}, p.max_vfolder_count ? String(p.max_vfolder_count) : "unlimited"),
        h("td", {}, p.max_quota_scope_size > 0 ? bytes(p.max_quota_scope_size) : "unlimited"),
        h("td", {class: "actions"}, deleteButton(spec.del, deleteQ, p.name, problem, load, signal))))
        : emptyRow(4, "None."));
    };
    const form = submitForm(`new-${kind}-policy-form`, [field("Name", name), field("Max folders", count),
      field("Quota per scope", quota)], `Create ${kind} policy`, async () => {
      const size = quota.value.trim() ? parseSize(quota.value) : -1;
      if (Number.isNaN(size)) throw {title: "Invalid quota", detail: "a size such as 512m, 10g or a number of bytes"};
      await mutate(spec.create, createQ, {name: name.value.trim(), props: {
        max_vfolder_count: numberOrNull(count.value) ?? 0, max_quota_scope_size: size}}, {signal});
      name.value = "";
      await load();
    }, problem);
    main.append(h("h2", {}, spec.title), form,
      h("table", {class: "table", id: `${kind}-policy-list`},
        h("thead", {}, h("tr", {}, ["Name", "Max folders", "Quota", ""].map((t) => h("th", {}, t)))), rows));
    loaders.push(load);
  }
  await Promise.all(loaders.map((f) => f()));
}

/** "10g", "512m", "1024" -> bytes (powers of 1024); NaN for anything else. */
function parseSize(text) {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$/i.exec(text.trim());
  if (!m) return Number.NaN;
  const power = " kmgtp".indexOf(m[2].toLowerCase() || " ");
  return Math.round(Number(m[1]) * 1024 ** power);
}

// Admin: resource groups (the original's scaling groups). Create, (de)activate, delete; the
// agents in each; which projects may use it (associate / disassociate).
import {gql} from "../../lib/api.js";
import {clear, confirmButton, h, once} from "../../lib/dom.js";
import {actionButton, adminHead, emptyRow, field, mutate, projectResourceGroups, submitForm} from "./common.js";

const SCHEDULERS = ["fifo", "lifo", "drf", "mof"];
const LIST_Q = `query { scaling_groups { name description is_active is_public scheduler driver wsproxy_addr } }`;
const AGENTS_Q = `query($sg: String) { agent_list(limit: 100, offset: 0, scaling_group: $sg, status: "ALIVE,LOST,TERMINATED") {
  items { id status } total_count } }`;
const PROJECTS_Q = `query { groups { id name domain_name } }`;
const CREATE_Q = `mutation($name: String!, $props: CreateScalingGroupInput!) { create_scaling_group(name: $name, props: $props) { ok msg } }`;
const MODIFY_Q = `mutation($name: String!, $props: ModifyScalingGroupInput!) { modify_scaling_group(name: $name, props: $props) { ok msg } }`;
const DELETE_Q = `mutation($name: String!) { delete_scaling_group(name: $name) { ok msg } }`;
const ALLOW_Q = `mutation($sg: String!, $gid: UUID!) { associate_scaling_group_with_user_group(scaling_group: $sg, user_group: $gid) { ok msg } }`;
const DENY_Q = `mutation($sg: String!, $gid: UUID!) { disassociate_scaling_group_with_user_group(scaling_group: $sg, user_group: $gid) { ok msg } }`;

export async function render({main, signal}) {
  const problem = adminHead(main, "/admin/resource-groups", "Resource groups");

  const name = h("input", {name: "name", id: "new-rg-name", required: true, maxlength: 64});
  const description = h("input", {name: "description", id: "new-rg-description", maxlength: 512});
  const scheduler = h("select", {name: "scheduler", id: "new-rg-scheduler"}, SCHEDULERS.map((s) => h("option", {value: s}, s)));
  const isPublic = h("input", {type: "checkbox", name: "is_public", checked: true});
  const form = submitForm("new-rg-form", [field("Name", name), field("Description", description),
    field("Scheduler", scheduler), h("label", {class: "inline"}, isPublic, "public")], "Create resource group", async () => {
    await mutate("create_scaling_group", CREATE_Q, {name: name.value.trim(), props: {
      description: description.value, scheduler: scheduler.value, driver: "static", is_public: isPublic.checked}}, {signal});
    name.value = ""; description.value = "";
    await load();
  }, problem);

  const rows = h("tbody", {id: "rg-rows"});
  main.append(h("h2", {}, "New resource group"), form, h("h2", {}, "Resource groups"),
    h("table", {class: "table", id: "rg-list"},
      h("thead", {}, h("tr", {}, ["Name", "State", "Scheduler", "App proxy", "Agents", "Allowed projects", ""].map((t) => h("th", {}, t)))),
      rows));

  function projectsCell(sg, projects, allowedFor) {
    return h("td", {}, projects.map((p) => {
      const allowed = (allowedFor.get(p.id) || []).includes(sg.name);
      const box = h("input", {type: "checkbox", checked: allowed, dataset: {project: p.name}});
      box.addEventListener("change", () => once(box, problem, async () => {
        try {
          await mutate(box.checked ? "associate_scaling_group_with_user_group" : "disassociate_scaling_group_with_user_group",
            box.checked ? ALLOW_Q : DENY_Q, {sg: sg.name, gid: p.id}, {signal});
        } catch (err) {
          box.checked = !box.checked;  // the change did not happen
          throw err;
        }
      }));
      return h("label", {class: "inline"}, box, `${p.name} (${p.domain_name})`);
    }));
  }

  function row(sg, agents, projects, allowedFor) {
    const toggle = actionButton(sg.is_active ? "Deactivate" : "Activate", async () => {
      await mutate("modify_scaling_group", MODIFY_Q, {name: sg.name, props: {is_active: !sg.is_active}}, {signal});
      await load();
    }, problem, {dataset: {action: "toggle"}});
    const del = confirmButton("Delete", "Really delete?", (btn) => once(btn, problem, async () => {
      await mutate("delete_scaling_group", DELETE_Q, {name: sg.name}, {signal});
      await load();
    }), {dataset: {action: "delete"}});
    return h("tr", {dataset: {rg: sg.name}},
      h("td", {}, sg.name, sg.description ? h("div", {class: "muted small"}, sg.description) : null),
      h("td", {}, `${sg.is_active ? "active" : "inactive"}${sg.is_public ? "" : ", private"}`),
      h("td", {}, sg.scheduler), h("td", {class: "small"}, sg.wsproxy_addr || "—"),
      h("td", {class: "small", dataset: {agents: String(agents.length)}},
        agents.length ? agents.map((a) => h("div", {}, `${a.id} (${a.status})`)) : h("span", {class: "muted"}, "none")),
      projectsCell(sg, projects, allowedFor), h("td", {class: "actions"}, toggle, del));
  }

  async function load() {
    const [groups, projects] = await Promise.all([gql(LIST_Q, {}, {signal}), gql(PROJECTS_Q, {}, {signal})]);
    const list = groups.scaling_groups || [];
    const agents = await Promise.all(list.map((sg) => gql(AGENTS_Q, {sg: sg.name}, {signal}).then((d) => d.agent_list.items)));
    const allowedFor = await projectResourceGroups(projects.groups || [], signal);
    clear(rows, list.length ? list.map((sg, i) => row(sg, agents[i], projects.groups || [], allowedFor))
      : emptyRow(7, "No resource groups."));
  }
  await load();
}

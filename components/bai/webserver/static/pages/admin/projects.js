// Admin: projects (the original's "groups"). Create, deactivate/delete, and their members
// (add by email, remove).
import {gql} from "../../lib/api.js";
import {clear, confirmButton, h, once} from "../../lib/dom.js";
import {actionButton, adminHead, emptyRow, field, mutate, projectResourceGroups, submitForm} from "./common.js";

const LIST_Q = `query { groups { id name description is_active domain_name resource_policy } }`;
const MEMBERS_Q = `query($gid: UUID!) { users(group_id: $gid) { uuid email } }`;
const CREATE_Q = `mutation($name: String!, $props: GroupInput!) { create_group(name: $name, props: $props) { ok msg group { id } } }`;
const MODIFY_Q = `mutation($gid: UUID!, $props: ModifyGroupInput!) { modify_group(gid: $gid, props: $props) { ok msg } }`;
const DELETE_Q = `mutation($gid: UUID!) { delete_group(gid: $gid) { ok msg } }`;

export async function render({main, signal}) {
  const problem = adminHead(main, "/admin/projects", "Projects");
  const me = (await gql("query { user { domain_name role } }", {}, {signal})).user;
  const superadmin = me.role === "superadmin";
  const domains = superadmin ? (await gql("query { domains { name } }", {}, {signal})).domains.map((d) => d.name) : [me.domain_name];
  const policies = superadmin
    ? (await gql("query { project_resource_policies { name } }", {}, {signal})).project_resource_policies.map((p) => p.name)
    : ["default"];

  const name = h("input", {name: "name", id: "new-project-name", required: true, maxlength: 64});
  const description = h("input", {name: "description", id: "new-project-description", maxlength: 512});
  const domain = h("select", {name: "domain", id: "new-project-domain"}, domains.map((d) => h("option", {value: d, selected: d === me.domain_name}, d)));
  const policy = h("select", {name: "policy", id: "new-project-policy"}, policies.map((p) => h("option", {value: p, selected: p === "default"}, p)));
  const form = submitForm("new-project-form", [field("Name", name), field("Description", description),
    field("Domain", domain), field("Resource policy", policy)], "Create project", async () => {
    await mutate("create_group", CREATE_Q, {name: name.value.trim(),
      props: {domain_name: domain.value, description: description.value, resource_policy: policy.value}}, {signal});
    name.value = ""; description.value = "";
    await load();
  }, problem);

  const rows = h("tbody", {id: "project-rows"});
  main.append(h("h2", {}, "New project"), form, h("h2", {}, "Projects"),
    h("table", {class: "table", id: "project-list"},
      h("thead", {}, h("tr", {}, ["Name", "Domain", "State", "Policy", "Resource groups", "Members", ""].map((t) => h("th", {}, t)))),
      rows));

  function members(g) {
    const cell = h("td", {class: "members-cell"});
    const list = h("ul", {class: "members"});
    const email = h("input", {name: "email", type: "email", required: true, placeholder: "member email"});
    const add = submitForm(`add-member-${g.id}`, [email], "Add", async () => {
      const found = (await gql("query($email: String) { user(email: $email) { uuid } }", {email: email.value.trim()}, {signal})).user;
      if (!found) throw Object.assign(new Error("No such user"), {title: "No such user", detail: email.value.trim()});
      await mutate("modify_group", MODIFY_Q, {gid: g.id, props: {user_update_mode: "add", user_uuids: [found.uuid]}}, {signal});
      email.value = "";
      await showMembers();
    }, problem, "inline-form");
    async function showMembers() {
      const users = (await gql(MEMBERS_Q, {gid: g.id}, {signal})).users || [];
      clear(list, users.map((u) => h("li", {dataset: {member: u.email}}, u.email, " ",
        actionButton("Remove", async () => {
          await mutate("modify_group", MODIFY_Q, {gid: g.id, props: {user_update_mode: "remove", user_uuids: [u.uuid]}}, {signal});
          await showMembers();
        }, problem, {dataset: {action: "remove-member"}}))));
    }
    const open = h("button", {type: "button", class: "secondary", dataset: {action: "members"}}, "Members");
    open.addEventListener("click", () => once(open, problem, async () => {
      open.hidden = true;
      cell.append(list, add);
      await showMembers();
    }));
    cell.append(open);
    return cell;
  }

  function row(g, resourceGroups) {
    const toggle = actionButton(g.is_active ? "Deactivate" : "Activate", async () => {
      await mutate("modify_group", MODIFY_Q, {gid: g.id, props: {is_active: !g.is_active}}, {signal});
      await load();
    }, problem, {dataset: {action: "toggle"}});
    const del = confirmButton("Delete", "Really delete?", (btn) => once(btn, problem, async () => {
      await mutate("delete_group", DELETE_Q, {gid: g.id}, {signal});
      await load();
    }), {dataset: {action: "delete"}});
    return h("tr", {dataset: {project: g.name, projectId: g.id}},
      h("td", {}, g.name, g.description ? h("div", {class: "muted small"}, g.description) : null),
      h("td", {}, g.domain_name), h("td", {}, g.is_active ? "active" : "inactive"), h("td", {}, g.resource_policy || ""),
      h("td", {}, resourceGroups.join(", ")), members(g), h("td", {class: "actions"}, toggle, del));
  }

  async function load() {
    const groups = (await gql(LIST_Q, {}, {signal})).groups || [];
    const allowed = await projectResourceGroups(groups, signal);
    clear(rows, groups.length ? groups.map((g) => row(g, allowed.get(g.id) || ["—"])) : emptyRow(7, "No projects."));
  }
  await load();
}

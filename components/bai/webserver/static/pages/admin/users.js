// Admin: users. Search, create (with a first project), change role and status, delete
// (the original's delete: the account is deactivated and its keypairs too).
import {gql} from "../../lib/api.js";
import {clear, h} from "../../lib/dom.js";
import {when} from "../../lib/format.js";
import {actionButton, adminHead, emptyRow, field, likeFilter, mutate, submitForm} from "./common.js";

const ROLES = ["user", "admin", "monitor", "superadmin"];
const STATUSES = ["active", "inactive", "deleted", "before-verification"];
const LIST_Q = `query($filter: String, $offset: Int!) {
  user_list(limit: 50, offset: $offset, filter: $filter, order: "email") {
    total_count items { uuid email username full_name role status domain_name resource_policy created_at }
  } }`;
const CREATE_Q = `mutation($email: String!, $props: UserInput!) {
  create_user(email: $email, props: $props) { ok msg user { uuid email } } }`;
const MODIFY_Q = `mutation($email: String!, $props: ModifyUserInput!) { modify_user(email: $email, props: $props) { ok msg } }`;
const DELETE_Q = `mutation($email: String!) { delete_user(email: $email) { ok msg } }`;

export async function render({main, signal, user}) {
  const problem = adminHead(main, "/admin/users", "Users");
  const me = (await gql("query { user { domain_name role } }", {}, {signal})).user;
  const superadmin = me.role === "superadmin";
  const domains = superadmin ? (await gql("query { domains { name } }", {}, {signal})).domains.map((d) => d.name) : [me.domain_name];
  const groups = (await gql("query { groups { id name domain_name } }", {}, {signal})).groups || [];
  const policies = superadmin ? (await gql("query { user_resource_policies { name } }", {}, {signal})).user_resource_policies.map((p) => p.name) : ["default"];

  // --- create
  const email = h("input", {name: "email", id: "new-user-email", type: "email", required: true, maxlength: 64});
  const username = h("input", {name: "username", id: "new-user-username", maxlength: 64});
  const password = h("input", {name: "password", id: "new-user-password", type: "password", required: true, autocomplete: "new-password"});
  const role = h("select", {name: "role", id: "new-user-role"},
    ROLES.filter((r) => superadmin || r === "user" || r === "admin").map((r) => h("option", {value: r}, r)));
  const domain = h("select", {name: "domain", id: "new-user-domain"}, domains.map((d) => h("option", {value: d, selected: d === me.domain_name}, d)));
  const project = h("select", {name: "project", id: "new-user-project"});
  const policy = h("select", {name: "policy", id: "new-user-policy"}, policies.map((p) => h("option", {value: p, selected: p === "default"}, p)));
  function fillProjects() {
    clear(project, h("option", {value: ""}, "(none)"),
      groups.filter((g) => g.domain_name === domain.value).map((g) => h("option", {value: g.id, selected: g.name === "default"}, g.name)));
  }
  fillProjects();
  domain.addEventListener("change", fillProjects);
  const created = h("div", {id: "new-user-result"});
  const createForm = submitForm("new-user-form", [
    field("Email", email), field("User name", username), field("Password", password), field("Role", role),
    field("Domain", domain), field("Project", project), field("Resource policy", policy),
  ], "Create user", async () => {
    const props = {password: password.value, username: username.value.trim() || email.value.trim(),
                   domain_name: domain.value, role: role.value, status: "active", resource_policy: policy.value,
                   group_ids: project.value ? [project.value] : []};
    const out = await mutate("create_user", CREATE_Q, {email: email.value.trim(), props}, {signal});
    clear(created, h("p", {class: "notice", dataset: {created: out.user.email}}, `Created ${out.user.email}.`));
    email.value = ""; username.value = ""; password.value = "";
    await load();
  }, problem);

  // --- list
  const search = h("input", {name: "q", id: "user-search", type: "search", placeholder: "email contains…"});
  const rows = h("tbody", {id: "user-rows"});
  const count = h("span", {class: "muted small", id: "user-count"});
  const searchForm = submitForm("user-search-form", [search], "Search", () => load(), problem, "inline-form");
  main.append(h("h2", {}, "New user"), createForm, created, h("h2", {}, "Users"),
    h("div", {class: "toolbar"}, searchForm, count),
    h("table", {class: "table", id: "user-list"},
      h("thead", {}, h("tr", {}, ["Email", "Name", "Domain", "Role", "Status", "Created", ""].map((t) => h("th", {}, t)))),
      rows));

  function row(u) {
    const roleSel = h("select", {name: "role", disabled: u.email === user.email},
      ROLES.map((r) => h("option", {value: r, selected: r === u.role}, r)));
    const statusSel = h("select", {name: "status", disabled: u.email === user.email},
      STATUSES.map((s) => h("option", {value: s, selected: s === u.status}, s)));
    const save = actionButton("Save", async () => {
      await mutate("modify_user", MODIFY_Q, {email: u.email, props: {role: roleSel.value, status: statusSel.value}}, {signal});
      await load();
    }, problem, {dataset: {action: "save"}});
    const del = actionButton("Delete", async () => {
      await mutate("delete_user", DELETE_Q, {email: u.email}, {signal});
      await load();
    }, problem, {class: "secondary danger", dataset: {action: "delete"}});
    const own = u.email === user.email;
    return h("tr", {dataset: {email: u.email}},
      h("td", {}, u.email), h("td", {}, u.full_name || u.username || ""), h("td", {}, u.domain_name),
      h("td", {}, roleSel), h("td", {}, statusSel), h("td", {}, when(u.created_at)),
      h("td", {class: "actions"}, own ? h("span", {class: "muted small"}, "you") : [save, del]));
  }

  let loads = 0;
  async function load() {
    const mine = ++loads;
    const q = search.value.trim();
    const data = await gql(LIST_Q, {filter: q ? likeFilter("email", q) : null, offset: 0}, {signal});
    if (mine !== loads) return;  // a newer load (another search, a change) answers instead
    const list = data.user_list;
    count.textContent = `${list.items.length} of ${list.total_count}`;
    clear(rows, list.items.length ? list.items.map(row) : emptyRow(7, "No users match."));
  }
  await load();
}

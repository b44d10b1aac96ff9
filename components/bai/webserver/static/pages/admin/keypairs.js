// Admin: keypairs. Issue one for a user (its secret key is shown once, in the answer, and never
// again: the list never asks for secrets), activate / deactivate, delete.
import {gql} from "../../lib/api.js";
import {clear, confirmButton, h, once} from "../../lib/dom.js";
import {when} from "../../lib/format.js";
import {actionButton, adminHead, emptyRow, field, mutate, submitForm} from "./common.js";

const LIST_Q = `query($email: String, $active: Boolean) {
  keypair_list(limit: 100, offset: 0, email: $email, is_active: $active, order: "-created_at") {
    total_count items { access_key user_id is_active is_admin resource_policy rate_limit created_at last_used }
  } }`;
const CREATE_Q = `mutation($user: String!, $props: KeyPairInput!) {
  create_keypair(user_id: $user, props: $props) { ok msg keypair { access_key secret_key } } }`;
const MODIFY_Q = `mutation($ak: String!, $props: ModifyKeyPairInput!) { modify_keypair(access_key: $ak, props: $props) { ok msg } }`;
const DELETE_Q = `mutation($ak: String!) { delete_keypair(access_key: $ak) { ok msg } }`;

export async function render({main, signal}) {
  const problem = adminHead(main, "/admin/keypairs", "Keypairs");
  const policies = (await gql("query { keypair_resource_policies { name } }", {}, {signal})).keypair_resource_policies || [];

  const owner = h("input", {name: "user", id: "new-keypair-user", type: "email", required: true, placeholder: "user@example.com"});
  const policy = h("select", {name: "policy", id: "new-keypair-policy"},
    policies.map((p) => h("option", {value: p.name, selected: p.name === "default"}, p.name)));
  const rate = h("input", {name: "rate_limit", id: "new-keypair-rate", type: "number", min: 1, value: "10000"});
  const issued = h("div", {id: "new-keypair-result"});
  const form = submitForm("new-keypair-form", [field("User email", owner), field("Resource policy", policy),
    field("Rate limit (requests / 15 min)", rate)], "Issue keypair", async () => {
    const out = await mutate("create_keypair", CREATE_Q, {user: owner.value.trim(),
      props: {resource_policy: policy.value, rate_limit: Number(rate.value) || 10000, is_active: true}}, {signal});
    // The only time the secret is on screen: hidden again as soon as the admin dismisses it.
    const secret = h("code", {id: "new-keypair-secret"}, out.keypair.secret_key);
    const box = h("div", {class: "secret-once", role: "status"},
      h("p", {}, "Access key ", h("code", {id: "new-keypair-access"}, out.keypair.access_key)),
      h("p", {}, "Secret key ", secret, " — copy it now: it is not shown again."));
    box.append(h("button", {type: "button", class: "secondary", id: "new-keypair-dismiss", on: {click: () => clear(issued)}}, "Done"));
    clear(issued, box);
    await load();
  }, problem);

  const filterEmail = h("input", {name: "email", id: "keypair-search", type: "search", placeholder: "user email"});
  const state = h("select", {name: "active", id: "keypair-active"},
    h("option", {value: ""}, "any state"), h("option", {value: "true"}, "active"), h("option", {value: "false"}, "inactive"));
  const rows = h("tbody", {id: "keypair-rows"});
  const search = submitForm("keypair-search-form", [filterEmail, state], "Show", () => load(), problem, "inline-form");
  main.append(h("h2", {}, "Issue a keypair"), form, issued, h("h2", {}, "Keypairs"), h("div", {class: "toolbar"}, search),
    h("table", {class: "table", id: "keypair-list"},
      h("thead", {}, h("tr", {}, ["Access key", "User", "State", "Policy", "Rate limit", "Created", "Last used", ""].map((t) => h("th", {}, t)))),
      rows));

  function row(k) {
    const toggle = actionButton(k.is_active ? "Deactivate" : "Activate", async () => {
      await mutate("modify_keypair", MODIFY_Q, {ak: k.access_key, props: {is_active: !k.is_active}}, {signal});
      await load();
    }, problem, {dataset: {action: k.is_active ? "deactivate" : "activate"}});
    const del = confirmButton("Delete", "Really delete?", (btn) => once(btn, problem, async () => {
      await mutate("delete_keypair", DELETE_Q, {ak: k.access_key}, {signal});
      await load();
    }), {dataset: {action: "delete"}});
    return h("tr", {dataset: {accessKey: k.access_key, active: String(k.is_active)}},
      h("td", {}, h("code", {}, k.access_key)), h("td", {}, k.user_id),
      h("td", {}, h("span", {class: `status ${k.is_active ? "status-running" : ""}`}, k.is_active ? "active" : "inactive"),
        k.is_admin ? h("span", {class: "muted small"}, " admin") : null),
      h("td", {}, k.resource_policy), h("td", {}, String(k.rate_limit ?? "")), h("td", {}, when(k.created_at)),
      h("td", {}, when(k.last_used)), h("td", {class: "actions"}, toggle, del));
  }

  let loads = 0;
  async function load() {
    const mine = ++loads;
    const email = filterEmail.value.trim() || null;
    const active = state.value === "" ? null : state.value === "true";
    const list = (await gql(LIST_Q, {email, active}, {signal})).keypair_list;
    if (mine !== loads) return;  // a newer load answers instead
    clear(rows, list.items.length ? list.items.map(row) : emptyRow(8, "No keypairs match."));
  }
  await load();
}

// What every admin page shares: the tabs between them, forms that submit once and show the
// manager's refusal, and GraphQL mutations whose {ok: false, msg} answers become errors.
// Adding an admin page: a module here exporting render(ctx), one entry in TABS below and one
// route in routes.js with `admin: true` (the router refuses the page to non-admins, and to the
// roles its `roles` leaves out: their tabs are not shown; the manager refuses their calls anyway).
import {ApiError, gql} from "../../lib/api.js";
import {ensureStyle} from "../../lib/chart.js";
import {h, once} from "../../lib/dom.js";
import {mayOpen} from "../../lib/router.js";

export const TABS = [
  ["/admin/users", "Users"],
  ["/admin/keypairs", "Keypairs"],
  ["/admin/projects", "Projects"],
  ["/admin/policies", "Resource policies"],
  ["/admin/resource-groups", "Resource groups"],
  ["/admin/agents", "Agents"],
];

/** Tabs, heading and a problem slot; answers the slot. */
export function adminHead(main, path, title) {
  ensureStyle();
  const problem = h("div", {class: "problem-slot", id: "admin-problem"});
  main.append(
    h("nav", {class: "admin-tabs", "aria-label": "Administration"},
      TABS.filter(([href]) => mayOpen(href)).map(([href, label]) => h("a", {href, class: href === path ? "active" : "", dataset: {tab: href}}, label))),
    h("div", {class: "page-head"}, h("h1", {}, title)), problem);
  return problem;
}

/** A mutation; `field`'s answer must say ok, else its msg is raised as the problem. */
export async function mutate(field, query, variables, opts = {}) {
  const data = await gql(query, variables, opts);
  const out = data?.[field];
  if (!out || out.ok === false) {
    throw new ApiError(200, {title: "The request was refused", detail: out?.msg || `${field} failed`});
  }
  return out;
}

/** A labelled input. */
export function field(label, input) {
  return h("label", {}, label, input);
}

/**
 * A form that sends at most one request at a time (the submit button is disabled meanwhile:
 * double submits send one); the manager's problem goes to `slot`.
 */
export function submitForm(id, children, label, onSubmit, slot, cls = "grid-form") {
  const submit = h("button", {type: "submit", class: "primary", id: `${id}-submit`}, label);
  const form = h("form", {class: cls, id}, children, h("div", {}, submit));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    once(submit, slot, () => onSubmit(form));
  });
  return form;
}

/** A button that runs `action` once at a time, problems into `slot`. */
export function actionButton(label, action, slot, attrs = {}) {
  const button = h("button", {type: "button", class: "secondary", ...attrs}, label);
  button.addEventListener("click", () => once(button, slot, action));
  return button;
}

export function numberOrNull(text) {
  const t = String(text).trim();
  return t === "" ? null : Number(t);
}

/** The original's filter strings take JSON string literals. */
export function likeFilter(column, text) {
  return `${column} ilike ${JSON.stringify(`%${text}%`)}`;
}

const PROJECT_RGS_Q = `query($gid: String!) { scaling_groups_for_user_group(user_group: $gid) { name } }`;

/**
 * Per project id, the resource groups associated with that project itself (not its domain's);
 * an empty map when the caller may not read them (the manager shows them to superadmins only).
 */
export async function projectResourceGroups(projects, signal) {
  try {
    const lists = await Promise.all(projects.map((p) => gql(PROJECT_RGS_Q, {gid: p.id}, {signal})
      .then((d) => (d.scaling_groups_for_user_group || []).map((sg) => sg.name))));
    return new Map(projects.map((p, i) => [p.id, lists[i]]));
  } catch (err) {
    if (err?.name === "AbortError" || err?.status !== 200) throw err;
    return new Map();  // refused (a domain admin): the column stays empty
  }
}

export function emptyRow(cols, text) {
  return h("tr", {class: "empty"}, h("td", {colspan: cols}, text));
}

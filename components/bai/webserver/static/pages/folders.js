// Folders: the caller's virtual folders (create, rename, delete to the trash, share with a user)
// and the invitations others sent them (accept or reject).
import {call, enc} from "../lib/api.js";
import {clear, confirmButton, h, once, showProblem} from "../lib/dom.js";
import {bytes, when} from "../lib/format.js";

function inlineForm(id, fields, label, onSubmit, slot) {
  const submit = h("button", {type: "submit", class: "primary"}, label);
  const form = h("form", {class: "inline-form", id}, fields, submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    once(submit, slot, () => onSubmit(form));
  });
  return form;
}

export async function render({main, signal}) {
  const problem = h("div", {class: "problem-slot", id: "folders-problem"});
  const rows = h("tbody", {id: "folder-rows"});
  const invitations = h("div", {id: "invitations"});
  const newName = h("input", {name: "name", id: "new-folder-name", required: true, maxlength: 64, placeholder: "new folder name"});
  const create = inlineForm("new-folder-form", [newName], "Create folder", async () => {
    await call("POST", "/folders", {body: {name: newName.value.trim()}, signal});
    newName.value = "";
    await load();
  }, problem);
  main.append(h("div", {class: "page-head"}, h("h1", {}, "Folders")), problem,
    h("section", {}, h("h2", {}, "Invitations"), invitations),
    h("div", {class: "toolbar"}, create),
    h("table", {class: "table", id: "folder-list"},
      h("thead", {}, h("tr", {}, ["Name", "Permission", "Owner", "Host", "Size", "Created", ""].map((t) => h("th", {}, t)))),
      rows));

  function actions(f) {
    const box = h("td", {class: "actions"});
    const slot = problem;
    const rename = h("button", {type: "button", class: "secondary", dataset: {action: "rename"}}, "Rename");
    const share = h("button", {type: "button", class: "secondary", dataset: {action: "share"}}, "Share");
    const del = confirmButton("Delete", "Really delete?", (btn) => once(btn, slot, async () => {
      await call("DELETE", `/folders/${enc(f.name)}`, {signal});
      await load();
    }), {dataset: {action: "delete"}});
    rename.addEventListener("click", () => {
      const input = h("input", {name: "new_name", required: true, value: f.name, maxlength: 64});
      box.replaceChildren(inlineForm("rename-folder-form", [input], "Save", async () => {
        await call("POST", `/folders/${enc(f.name)}/rename`, {body: {new_name: input.value.trim()}, signal});
        await load();
      }, slot));
      input.select();
    });
    share.addEventListener("click", () => {
      const email = h("input", {name: "email", type: "email", required: true, placeholder: "user@example.com"});
      const perm = h("select", {name: "perm"}, ["ro", "rw", "wd"].map((p) => h("option", {value: p}, p)));
      box.replaceChildren(inlineForm("share-folder-form", [email, perm], "Invite", async () => {
        await call("POST", `/folders/${enc(f.name)}/invite`, {body: {perm: perm.value, emails: [email.value.trim()]}, signal});
        box.replaceChildren(h("span", {class: "notice small"}, `Invited ${email.value.trim()}`));
      }, slot));
      email.focus();
    });
    if (f.is_owner) box.append(rename, share, del);
    return box;
  }

  async function loadInvitations() {
    const answer = await call("GET", "/folders/invitations/list", {signal});
    const list = answer.invitations || [];
    clear(invitations, list.length ? h("ul", {class: "plain"}, list.map((inv) => {
      const accept = h("button", {type: "button", class: "primary", dataset: {action: "accept"}}, "Accept");
      const reject = h("button", {type: "button", class: "secondary", dataset: {action: "reject"}}, "Reject");
      accept.addEventListener("click", () => once(accept, problem, async () => {
        await call("POST", "/folders/invitations/accept", {body: {inv_id: inv.id}, signal});
        await load();
      }));
      reject.addEventListener("click", () => once(reject, problem, async () => {
        await call("DELETE", "/folders/invitations/delete", {body: {inv_id: inv.id}, signal});
        await load();
      }));
      return h("li", {dataset: {invitation: inv.id, folder: inv.vfolder_name}},
        `${inv.inviter} shares `, h("strong", {}, inv.vfolder_name), ` (${inv.perm}) `, accept, " ", reject);
    })) : h("p", {class: "muted small"}, "No invitations."));
  }

  async function load() {
    const [folders] = await Promise.all([call("GET", "/folders", {signal}), loadInvitations()]);
    showProblem(problem, null);
    clear(rows, folders.length ? folders.map((f) => h("tr", {dataset: {folder: f.name, status: f.status}},
      h("td", {}, h("a", {href: `/folders/${enc(f.name)}`}, f.name)),
      h("td", {}, f.permission),
      h("td", {class: "small"}, f.is_owner ? "you" : (f.user_email || f.group_name || "")),
      h("td", {class: "small"}, f.host),
      h("td", {class: "small"}, bytes(f.cur_size || 0)),
      h("td", {class: "small"}, when(f.created_at)),
      actions(f))) : h("tr", {class: "empty"}, h("td", {colspan: 7}, "No folders yet.")));
    rows.dataset.loaded = "1";
  }

  await load();
}

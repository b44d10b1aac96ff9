// Settings: the logged-in user's own account. Full name and password (/auth/update-full-name,
// /auth/update-password), the SSH keypair sessions get (/auth/ssh-keypair: GET the public key,
// PATCH a new pair whose private key is shown once, POST one's own pair), dotfiles written into
// every new session's home (/user-config/dotfiles) and the bootstrap script new sessions run
// (/user-config/bootstrap-script). The manager owns every rule and bound: its refusals are shown
// next to the form, and nothing the user typed is cleared until a call succeeded.
import {ApiError, call, gql} from "../lib/api.js";
import {check} from "../lib/auth.js";
import {clear, confirmButton, h, once, showProblem} from "../lib/dom.js";
import {bytes} from "../lib/format.js";

const ME_Q = "query { user { email full_name role domain_name } }";
const PRIVATE_KEY_FILE = "id_container";

function section(id, title, intro, ...children) {
  return h("section", {class: "card settings-section", id},
    h("h2", {}, title), intro ? h("p", {class: "muted small"}, intro) : null, children);
}

/**
 * A form that sends one call at a time (its submit button is disabled meanwhile); the manager's
 * refusal goes to `#<id>-problem`, and what `onSubmit` answers (a sentence) to `#<id>-done`.
 */
function settingsForm(id, children, label, onSubmit, extraButtons = []) {
  const problem = h("div", {class: "problem-slot", id: `${id}-problem`});
  const done = h("p", {class: "notice", id: `${id}-done`, role: "status", hidden: true});
  const submit = h("button", {type: "submit", class: "primary", id: `${id}-submit`}, label);
  const form = h("form", {class: "form settings-form", id}, children, problem, done,
    h("div", {class: "form-actions"}, submit, extraButtons));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    done.hidden = true;
    once(submit, problem, async () => {
      const message = await onSubmit();
      if (message) say(done, message);
    });
  });
  return {form, submit, problem, done};
}

function say(el, message) {
  el.textContent = message;
  el.hidden = false;
}

function field(label, input, hint) {
  return h("label", {}, label, input, hint ? h("span", {class: "small muted"}, hint) : null);
}

function monospace(attrs) {
  return h("textarea", {spellcheck: "false", autocomplete: "off", autocapitalize: "off", ...attrs});
}

// -- account -------------------------------------------------------------------------------------

function accountSection(ctx, me) {
  const u = ctx.user;
  const shownName = h("span", {id: "account-full-name"}, me?.full_name || "");
  const facts = h("dl", {class: "facts", id: "account-facts"},
    h("dt", {}, "Email"), h("dd", {id: "account-email"}, me?.email || u.email),
    h("dt", {}, "Full name"), h("dd", {}, shownName),
    h("dt", {}, "Role"), h("dd", {id: "account-role"}, me?.role || u.role),
    h("dt", {}, "Domain"), h("dd", {id: "account-domain"}, me?.domain_name || ""),
    h("dt", {}, "Access key"), h("dd", {}, h("code", {id: "account-access-key"}, u.accessKey)));

  const fullName = h("input", {id: "full-name", name: "full_name", maxlength: 64, value: me?.full_name || "",
    autocomplete: "name"});
  const nameForm = settingsForm("full-name-form", [field("Full name", fullName)], "Save name", async () => {
    const wanted = fullName.value.trim();
    await call("POST", "/auth/update-full-name", {body: {email: me?.email || u.email, full_name: wanted}, signal: ctx.signal});
    shownName.textContent = wanted;
    return "Your full name is saved.";
  });

  const oldPw = h("input", {id: "password-old", name: "old_password", type: "password", required: true,
    autocomplete: "current-password"});
  const newPw = h("input", {id: "password-new", name: "new_password", type: "password", required: true,
    autocomplete: "new-password"});
  const newPw2 = h("input", {id: "password-new2", name: "new_password2", type: "password", required: true,
    autocomplete: "new-password"});
  const pwForm = settingsForm("password-form", [field("Current password", oldPw), field("New password", newPw),
    field("New password again", newPw2)], "Change password", async () => {
    try {
      await call("POST", "/auth/update-password", {signal: ctx.signal,
        body: {old_password: oldPw.value, new_password: newPw.value, new_password2: newPw2.value}});
    } catch (err) {
      // The original's one answer that is not problem+json: 400 {"error_msg": "new password mismatch"}.
      if (err instanceof ApiError && err.problem?.error_msg) {
        throw new ApiError(err.status, {title: "The two new passwords differ", detail: err.problem.error_msg});
      }
      throw err;
    }
    for (const input of [oldPw, newPw, newPw2]) input.value = "";
    // The webserver's login holds the keypair, which a password change keeps: it normally stays
    // valid. Should it have ended, say so and send the user to log in with the new password.
    const stillLoggedIn = await check().then(Boolean, () => true);  // unreachable: not a verdict
    if (!stillLoggedIn) {
      await ctx.navigate("/login?expired=1&next=%2Fsettings", {replace: true});
      return "";
    }
    return "Your password is changed. You stay logged in here; log in with the new password next time.";
  });

  return section("settings-account", "Account", "", facts, h("div", {class: "settings-columns"},
    h("div", {}, h("h3", {}, "Name"), nameForm.form),
    h("div", {}, h("h3", {}, "Password"), pwForm.form)));
}

// -- SSH keypair ---------------------------------------------------------------------------------

function sshSection(ctx, initialPublicKey) {
  const {signal} = ctx;
  const publicBox = h("div", {id: "ssh-public"});
  const copySlot = h("span", {});
  const problem = h("div", {class: "problem-slot", id: "ssh-problem"});
  const copied = h("p", {class: "notice", id: "ssh-copied", role: "status", hidden: true});
  const privateSlot = h("div", {id: "ssh-private-once"});
  let blobUrl = null;
  const forgetPrivateKey = () => {
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = null;
    clear(privateSlot);
  };
  signal.addEventListener("abort", forgetPrivateKey);

  function showPublic(pubkey) {
    copied.hidden = true;
    if (!pubkey) {
      clear(publicBox, h("p", {class: "muted", id: "ssh-none"}, "No SSH keypair yet: generate one or upload your own."));
      clear(copySlot);
      return;
    }
    const key = h("pre", {class: "settings-key", id: "ssh-public-key"}, pubkey.trim());
    const copy = h("button", {type: "button", class: "secondary", id: "ssh-copy"}, "Copy public key");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(pubkey.trim());
        say(copied, "Copied to the clipboard.");
      } catch {
        // No clipboard access (an insecure origin, a refused permission): select it for Ctrl+C.
        getSelection().selectAllChildren(key);
        say(copied, "Selected: press Ctrl+C to copy.");
      }
    });
    clear(publicBox, key);
    clear(copySlot, copy);
  }

  function showPrivateOnce(privkey) {
    forgetPrivateKey();
    blobUrl = URL.createObjectURL(new Blob([privkey], {type: "application/x-pem-file"}));
    const download = h("a", {class: "button primary", id: "ssh-private-download", href: blobUrl,
      download: PRIVATE_KEY_FILE}, `Download ${PRIVATE_KEY_FILE}`);
    const dismiss = h("button", {type: "button", class: "secondary", id: "ssh-private-done"}, "I saved it");
    dismiss.addEventListener("click", forgetPrivateKey);
    clear(privateSlot, h("div", {class: "settings-once", role: "alert"},
      h("strong", {}, "This private key is shown only now."),
      h("p", {class: "small"}, `Download it and keep it safe (e.g. ~/.ssh/${PRIVATE_KEY_FILE}, mode 600): `,
        "this page never shows it again. Anyone holding it can log in to your sessions over SSH."),
      h("details", {}, h("summary", {}, "Show the private key"),
        h("pre", {class: "settings-key", id: "ssh-private-key"}, privkey.trim())),
      h("div", {class: "form-actions"}, download, dismiss)));
  }

  const generate = async (button) => once(button, problem, async () => {
    const pair = await call("PATCH", "/auth/ssh-keypair", {signal});
    showPublic(pair.ssh_public_key);
    showPrivateOnce(pair.ssh_private_key);
    renderGenerate(true);
  });
  const generateSlot = h("span", {});
  function renderGenerate(hasKey) {
    // Replacing a key breaks whatever uses the old one: ask once more when there is one.
    const button = hasKey
      ? confirmButton("Generate a new keypair", "Replace the current key?", generate, {id: "ssh-generate"})
      : h("button", {type: "button", class: "primary", id: "ssh-generate"}, "Generate a keypair");
    if (!hasKey) button.addEventListener("click", () => generate(button));
    clear(generateSlot, button);
  }

  const upPublic = monospace({id: "ssh-upload-public", name: "pubkey", rows: 3, required: true,
    placeholder: "ssh-ed25519 AAAA... you@laptop"});
  const upPrivate = monospace({id: "ssh-upload-private", name: "privkey", rows: 6, required: true,
    placeholder: "-----BEGIN OPENSSH PRIVATE KEY-----"});
  const upload = settingsForm("ssh-upload-form", [field("Public key", upPublic), field("Private key", upPrivate)],
    "Save my keypair", async () => {
      const pair = await call("POST", "/auth/ssh-keypair", {signal,
        body: {pubkey: upPublic.value, privkey: upPrivate.value}});
      upPublic.value = "";
      upPrivate.value = "";
      forgetPrivateKey();
      showPublic(pair.ssh_public_key);
      renderGenerate(true);
      return "Your keypair is saved: new sessions use it.";
    });

  showPublic(initialPublicKey);
  renderGenerate(!!initialPublicKey);
  return section("settings-ssh", "SSH keypair",
    "The SSH keypair stored with your access key. The server keeps the private key; this page shows only the public one.",
    publicBox, h("div", {class: "form-actions"}, copySlot, generateSlot), copied, problem, privateSlot,
    h("details", {id: "ssh-upload"}, h("summary", {}, "Use my own keypair instead"), upload.form));
}

// -- dotfiles ------------------------------------------------------------------------------------

function dotfilesSection(ctx) {
  const {signal} = ctx;
  const problem = h("div", {class: "problem-slot", id: "dotfiles-problem"});
  const rows = h("tbody", {id: "dotfile-rows"});
  const path = h("input", {id: "dotfile-path", name: "path", required: true, placeholder: ".vimrc",
    autocomplete: "off", spellcheck: "false"});
  const permission = h("input", {id: "dotfile-permission", name: "permission", value: "644", inputmode: "numeric",
    size: 4, autocomplete: "off"});
  const data = monospace({id: "dotfile-data", name: "data", rows: 8});
  const heading = h("h3", {id: "dotfile-form-title"}, "New dotfile");
  const cancel = h("button", {type: "button", class: "secondary", id: "dotfile-cancel", hidden: true}, "Cancel");
  let editing = null;  // the path being edited, or null when creating

  const form = settingsForm("dotfile-form", [
    h("div", {class: "row"}, field("Path (relative to /home/work)", path), field("Permission (octal)", permission)),
    field("Content", data)], "Create dotfile", async () => {
    const body = {path: editing ?? path.value.trim(), permission: permission.value.trim(), data: data.value};
    await call(editing ? "PATCH" : "POST", "/user-config/dotfiles", {body, signal});
    const message = editing ? `Saved ${body.path}.` : `Created ${body.path}.`;
    edit(null);
    await load();
    return message;
  }, [cancel]);
  cancel.addEventListener("click", () => { form.done.hidden = true; edit(null); });

  function edit(dotfile) {
    editing = dotfile ? dotfile.path : null;
    showProblem(form.problem, null);
    path.value = dotfile?.path ?? "";
    path.readOnly = !!dotfile;  // the API names a dotfile by its path: a new path is a new dotfile
    permission.value = dotfile?.permission ?? "644";
    data.value = dotfile?.data ?? "";
    heading.textContent = dotfile ? `Edit ${dotfile.path}` : "New dotfile";
    form.submit.textContent = dotfile ? "Save changes" : "Create dotfile";
    form.form.dataset.mode = dotfile ? "edit" : "create";
    cancel.hidden = !dotfile;
    if (dotfile) data.focus();
  }

  function row(d) {
    const editButton = h("button", {type: "button", class: "secondary", dataset: {action: "edit"}}, "Edit");
    editButton.addEventListener("click", () => { form.done.hidden = true; edit(d); });
    const del = confirmButton("Delete", "Really delete?", (btn) => once(btn, problem, async () => {
      await call("DELETE", "/user-config/dotfiles", {query: {path: d.path}, signal});
      if (editing === d.path) edit(null);
      await load();
      say(form.done, `Deleted ${d.path}.`);
    }), {dataset: {action: "delete"}});
    return h("tr", {dataset: {dotfile: d.path}},
      h("td", {}, h("code", {}, d.path)), h("td", {class: "small"}, d.permission),
      h("td", {class: "small"}, bytes(new TextEncoder().encode(d.data).length)),
      h("td", {class: "actions"}, editButton, del));
  }

  async function load() {
    const list = await call("GET", "/user-config/dotfiles", {signal});
    clear(rows, list.length ? list.map(row)
      : h("tr", {class: "empty"}, h("td", {colspan: 4}, "No dotfiles yet.")));
    rows.dataset.loaded = "1";
  }

  form.form.dataset.mode = "create";
  const el = section("settings-dotfiles", "Dotfiles",
    "Files written into the home directory of each new session; yours win over the project's and the domain's.",
    problem, h("table", {class: "table", id: "dotfile-list"},
      h("thead", {}, h("tr", {}, ["Path", "Permission", "Size", ""].map((t) => h("th", {}, t)))), rows),
    heading, form.form);
  return {el, load};
}

// -- bootstrap script ----------------------------------------------------------------------------

function bootstrapSection(ctx, script) {
  const text = monospace({id: "bootstrap-script", name: "script", rows: 10, value: script || "",
    placeholder: "#!/bin/sh\npip install --user ..."});
  const form = settingsForm("bootstrap-form", [field("Script", text)], "Save script", async () => {
    await call("POST", "/user-config/bootstrap-script", {body: {script: text.value}, signal: ctx.signal});
    return text.value.trim() ? "Your bootstrap script is saved." : "Your bootstrap script is removed.";
  });
  return section("settings-bootstrap", "Bootstrap script",
    "Runs when each new session starts, unless the session is started with a script of its own. Leave it blank for none.",
    form.form);
}

// -- the page ------------------------------------------------------------------------------------

export async function render(ctx) {
  const {main, signal} = ctx;
  const problem = h("div", {class: "problem-slot", id: "settings-problem"});
  const [me, ssh, script] = await Promise.all([
    gql(ME_Q, {}, {signal}).then((d) => d.user).catch((err) => { if (err?.name === "AbortError") throw err; showProblem(problem, err); return null; }),
    call("GET", "/auth/ssh-keypair", {signal}),
    call("GET", "/user-config/bootstrap-script", {signal}),
  ]);
  const dotfiles = dotfilesSection(ctx);
  await dotfiles.load();
  main.append(h("div", {class: "page-head"}, h("h1", {}, "Settings")), problem,
    h("div", {class: "settings"}, accountSection(ctx, me), sshSection(ctx, ssh?.ssh_public_key),
      dotfiles.el, bootstrapSection(ctx, typeof script === "string" ? script : "")));
}

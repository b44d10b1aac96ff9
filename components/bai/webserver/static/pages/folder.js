// Inside a folder: browse directories, upload files (progress, resumable, cancellable), download,
// make a directory, rename and delete entries.
import {call, enc} from "../lib/api.js";
import {clear, confirmButton, h, once, showProblem} from "../lib/dom.js";
import {bytes, when} from "../lib/format.js";
import {download, upload} from "../lib/tus.js";

function join(dir, name) {
  return dir === "." || dir === "" ? name : `${dir}/${name}`;
}

export async function render({main, params, query, signal}) {
  const folder = params.name;
  const dir = (query.get("path") || ".").replace(/^\/+|\/+$/g, "") || ".";
  const problem = h("div", {class: "problem-slot", id: "folder-problem"});
  const rows = h("tbody", {id: "file-rows"});
  const transfers = h("ul", {class: "plain transfers", id: "uploads"});
  const here = (path) => `/folders/${enc(folder)}${path && path !== "." ? "?path=" + encodeURIComponent(path) : ""}`;

  const crumbs = h("p", {class: "crumbs", id: "folder-crumbs"}, h("a", {href: "/folders"}, "Folders"), " / ",
    h("a", {href: here(".")}, folder));
  if (dir !== ".") {
    let acc = ".";
    for (const part of dir.split("/")) {
      acc = join(acc, part);
      crumbs.append(" / ", h("a", {href: here(acc)}, part));
    }
  }

  const picker = h("input", {type: "file", multiple: true, id: "upload-input"});
  const uploadButton = h("button", {type: "button", class: "primary", id: "upload-start"}, "Upload");
  const dirName = h("input", {name: "dir", id: "mkdir-name", required: true, placeholder: "new directory"});
  const mkdirButton = h("button", {type: "submit", class: "secondary"}, "Make directory");
  const mkdirForm = h("form", {class: "inline-form", id: "mkdir-form"}, dirName, mkdirButton);
  main.append(crumbs, h("h1", {}, dir === "." ? folder : dir.split("/").pop()), problem,
    h("div", {class: "toolbar"}, h("span", {class: "inline-form"}, picker, uploadButton), mkdirForm),
    transfers,
    h("table", {class: "table", id: "file-list"},
      h("thead", {}, h("tr", {}, ["Name", "Size", "Modified", ""].map((t) => h("th", {}, t)))), rows));

  // A read-only share shows no write actions (the manager would refuse them anyway).
  const info = await call("GET", `/folders/${enc(folder)}`, {signal});
  const writable = info.permission !== "ro";
  main.dataset.permission = info.permission;
  uploadButton.parentElement.hidden = !writable;
  mkdirForm.hidden = !writable;

  mkdirForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    once(mkdirButton, problem, async () => {
      await call("POST", `/folders/${enc(folder)}/mkdir`, {body: {path: join(dir, dirName.value.trim()), parents: true}, signal});
      dirName.value = "";
      await load();
    });
  });

  // Each file gets its own row with a progress bar and a cancel button; a failed or cancelled
  // upload can be started again and resumes where it stopped.
  function startUpload(file) {
    const path = join(dir, file.name);
    const bar = h("progress", {max: file.size || 1, value: 0});
    const label = h("span", {class: "small"}, "starting…");
    const cancel = h("button", {type: "button", class: "secondary", dataset: {action: "cancel"}}, "Cancel");
    const item = h("li", {dataset: {upload: file.name, state: "running"}}, h("strong", {}, file.name), " ", bar, " ", label, " ", cancel);
    transfers.append(item);
    const abort = new AbortController();
    signal.addEventListener("abort", () => abort.abort());
    cancel.addEventListener("click", () => abort.abort());
    upload(folder, path, file, {signal: abort.signal, onProgress: (sent, total) => {
      if (item.dataset.startedAt === undefined) item.dataset.startedAt = String(sent); // > 0: resumed
      bar.value = sent;
      label.textContent = `${bytes(sent)} of ${bytes(total)}`;
      item.dataset.sent = String(sent);
    }, onRetry: (n) => {
      item.dataset.retries = String(n);
      label.textContent = `connection lost; resuming (try ${n})…`;
    }}).then(() => {
      item.dataset.state = "done";
      label.textContent = `${bytes(file.size)} uploaded`;
      cancel.remove();
      return load();
    }, (err) => {
      item.dataset.state = err.name === "AbortError" ? "cancelled" : "failed";
      label.textContent = err.name === "AbortError" ? "cancelled (upload it again to resume)" : `${err.title}${err.detail ? ": " + err.detail : ""}`;
      cancel.remove();
    });
  }

  uploadButton.addEventListener("click", () => {
    for (const file of picker.files) startUpload(file);
    picker.value = "";
  });

  function fileRow(item) {
    const path = join(dir, item.name);
    const isDir = item.type === "DIRECTORY";
    const actions = h("td", {class: "actions"});
    const dl = h("button", {type: "button", class: "secondary", dataset: {action: "download"}}, isDir ? "Download zip" : "Download");
    dl.addEventListener("click", () => once(dl, problem, () => download(folder, path, {archive: isDir})));
    const rename = h("button", {type: "button", class: "secondary", dataset: {action: "rename"}}, "Rename");
    rename.addEventListener("click", () => {
      const input = h("input", {name: "new_name", required: true, value: item.name});
      const save = h("button", {type: "submit", class: "primary"}, "Save");
      const form = h("form", {class: "inline-form"}, input, save);
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        once(save, problem, async () => {
          await call("POST", `/folders/${enc(folder)}/rename-file`,
            {body: {target_path: path, new_name: input.value.trim(), is_dir: isDir}, signal});
          await load();
        });
      });
      actions.replaceChildren(form);
      input.select();
    });
    const del = confirmButton("Delete", "Really delete?", (btn) => once(btn, problem, async () => {
      await call("POST", `/folders/${enc(folder)}/delete-files`, {body: {files: [path], recursive: isDir}, signal});
      await load();
    }), {dataset: {action: "delete"}});
    actions.append(dl);
    if (writable) actions.append(rename, del);
    return h("tr", {dataset: {file: item.name, type: item.type}},
      h("td", {}, isDir ? h("a", {href: here(path)}, `${item.name}/`) : item.name),
      h("td", {class: "small"}, isDir ? "" : bytes(item.size)),
      h("td", {class: "small"}, when(item.modified)),
      actions);
  }

  async function load() {
    try {
      const answer = await call("GET", `/folders/${enc(folder)}/files`, {query: {path: dir}, signal});
      const items = (answer.items || []).slice().sort((a, b) =>
        (a.type === "DIRECTORY" ? 0 : 1) - (b.type === "DIRECTORY" ? 0 : 1) || a.name.localeCompare(b.name));
      showProblem(problem, null);
      clear(rows, items.length ? items.map(fileRow) : h("tr", {class: "empty"}, h("td", {colspan: 4}, "Empty.")));
      rows.dataset.loaded = String(Date.now());
    } catch (err) {
      if (err.name !== "AbortError") showProblem(problem, err);
    }
  }

  await load();
}

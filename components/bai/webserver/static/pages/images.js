// Images the caller may use (the manager's GraphQL `images`, as `backend.ai image list` asks):
// name and tag, architecture, size, whether a live agent has it, the resource minimums of its
// labels. The caller's own customized images (`customized_images`: sessions saved with "Save as
// image") are marked and can be forgotten (`forget_image_by_id`, as `backend.ai image forget`).
// Superadmins can rescan a registry (`rescan_images`, a background task followed live).
import {ApiError, gql} from "../lib/api.js";
import {clear, confirmButton, h, once, showProblem} from "../lib/dom.js";
import {bytes} from "../lib/format.js";
import {followTask} from "../lib/live.js";

const FIELDS = "id name tag registry architecture size_bytes installed aliases labels { key value } resource_limits { key min }";
const LIST_Q = `query { images { ${FIELDS} } customized_images { ${FIELDS} } }`;
const FORGET_Q = `mutation($id: String!) { forget_image_by_id(image_id: $id) { ok msg } }`;
const RESCAN_Q = `mutation($registry: String) { rescan_images(registry: $registry) { ok msg task_id } }`;
const CUSTOM_NAME = "ai.backend.customized-image.name";

export function imageRef(img) {
  return `${img.registry}/${img.name}:${img.tag}`;
}

function label(img, key) {
  return (img.labels || []).find((kv) => kv.key === key)?.value;
}

/** "cpu 1 · mem 320 MiB" from the image's resource limits (the labels' minimums). */
function minimums(img) {
  return (img.resource_limits || [])
    .filter((l) => l.min && l.min !== "0")
    .map((l) => `${l.key} ${l.key === "mem" || l.key.endsWith(".mem") ? bytes(l.min) : l.min}`)
    .join(" · ") || "—";
}

async function refused(field, query, variables, signal) {
  const out = (await gql(query, variables, {signal}))?.[field];
  if (!out || out.ok === false) throw new ApiError(200, {title: "The request was refused", detail: out?.msg || `${field} failed`});
  return out;
}

export async function render({main, signal, user}) {
  const problem = h("div", {class: "problem-slot", id: "images-problem"});
  const notice = h("div", {id: "images-notice", role: "status"});
  const filter = h("input", {id: "images-filter", type: "search", placeholder: "filter by name or tag"});
  const mineOnly = h("input", {id: "images-mine", type: "checkbox"});
  const rows = h("tbody", {id: "image-rows"});
  main.append(h("div", {class: "page-head"}, h("h1", {}, "Images")), problem, notice,
    h("div", {class: "toolbar"}, filter, h("label", {class: "inline"}, mineOnly, "only my customized images")));

  if (user?.role === "superadmin") main.append(rescanForm());
  main.append(h("table", {class: "table", id: "image-list"},
    h("thead", {}, h("tr", {}, ["Image", "Architecture", "Size", "Installed", "Minimum resources", ""].map((t) => h("th", {}, t)))),
    rows));

  let images = [];
  let mine = new Set();

  function row(img) {
    const ref = imageRef(img);
    const own = mine.has(img.id);
    const forget = own ? confirmButton("Forget", "Really forget?", (btn) => once(btn, problem, async () => {
      clear(notice);
      await refused("forget_image_by_id", FORGET_Q, {id: img.id}, signal);
      clear(notice, h("p", {class: "notice"}, `Forgot ${ref}.`));
      await load();
    }), {dataset: {action: "forget"}}) : null;
    return h("tr", {dataset: {image: ref, id: img.id, mine: own ? "1" : "0"}},
      h("td", {}, h("div", {}, `${img.name}:${img.tag}`),
        h("div", {class: "muted small"}, img.registry, img.aliases?.length ? ` · alias ${img.aliases.join(", ")}` : ""),
        own ? h("span", {class: "status status-running image-mine"}, `yours: ${label(img, CUSTOM_NAME) || "customized"}`) : null),
      h("td", {}, img.architecture),
      h("td", {}, img.size_bytes ? bytes(img.size_bytes) : "—"),
      h("td", {dataset: {installed: img.installed ? "yes" : "no"}}, img.installed ? "yes" : "no"),
      h("td", {class: "small"}, minimums(img)),
      h("td", {class: "actions"}, h("a", {href: `/sessions/new?image=${encodeURIComponent(ref)}`, class: "button secondary", title: img.installed ? "" : "an agent pulls it first"}, "Start"), forget));
  }

  function paint() {
    const words = filter.value.trim().toLowerCase();
    const shown = images.filter((img) => (!mineOnly.checked || mine.has(img.id))
      && (!words || imageRef(img).toLowerCase().includes(words) || (label(img, CUSTOM_NAME) || "").toLowerCase().includes(words)));
    clear(rows, shown.length ? shown.map(row) : h("tr", {class: "empty"}, h("td", {colspan: 6}, images.length ? "No image matches." : "No images.")));
  }

  async function load() {
    const data = await gql(LIST_Q, {}, {signal});
    const custom = data.customized_images || [];
    mine = new Set(custom.map((img) => img.id));
    // The owner's customized images are among `images` too; any that are not (another registry) join them.
    const byId = new Map([...(data.images || []), ...custom].map((img) => [img.id, img]));
    const rank = (img) => (mine.has(img.id) ? 0 : 2) + (img.installed ? 0 : 1);
    images = [...byId.values()].sort((a, b) => rank(a) - rank(b) || imageRef(a).localeCompare(imageRef(b)));
    main.dataset.images = String(images.length);
    paint();
  }

  function rescanForm() {
    const registry = h("input", {id: "rescan-registry", name: "registry", placeholder: "registry host (empty: all configured)"});
    const submit = h("button", {type: "submit", class: "secondary", id: "rescan-submit"}, "Rescan");
    const progress = h("span", {class: "muted small", id: "rescan-progress"});
    const form = h("form", {class: "inline-form", id: "rescan-form"}, registry, submit, progress);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      once(submit, problem, async () => {
        clear(notice);
        progress.textContent = "starting…";
        try {
          const out = await refused("rescan_images", RESCAN_Q, {registry: registry.value.trim() || null}, signal);
          const message = await followTask(out.task_id, {signal, onProgress: (p) => {
            progress.textContent = p.total ? `${p.current} / ${p.total}${p.message ? ` · ${p.message}` : ""}` : p.message || "scanning…";
          }});
          clear(notice, h("p", {class: "notice"}, `Rescan done${message ? `: ${message}` : "."}`));
          await load();
        } finally {
          progress.textContent = "";
        }
      });
    });
    return form;
  }

  filter.addEventListener("input", paint);
  mineOnly.addEventListener("change", paint);
  try {
    await load();
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    showProblem(problem, err);
  }
}

// Start a session: an image from the manager's list, resources (or a preset), folders to mount.
// One request per submit (the button stays disabled while it runs); the manager's refusal is
// shown as its problem title and detail; on success, the session's page follows it live.
import {call, enc, gql} from "../lib/api.js";
import {h, once, showProblem} from "../lib/dom.js";
import {bytes, memInput, slots} from "../lib/format.js";

// Every image the caller may use; those no live agent has yet come last (an agent pulls them).
const IMAGES = `query { images { name tag registry architecture aliases installed } }`;

function imageRef(img) {
  return img.aliases?.length ? img.aliases[0] : `${img.registry}/${img.name}:${img.tag}`;
}

function randomName() {
  const bytes4 = crypto.getRandomValues(new Uint8Array(4));
  return "web-" + Array.from(bytes4, (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function render({main, signal, navigate, query}) {
  const problem = h("div", {class: "problem-slot", id: "new-session-problem"});
  main.append(h("h1", {}, "Start a session"), problem);
  const [imageData, presetData, folders] = await Promise.all([
    gql(IMAGES, {}, {signal}),
    call("GET", "/resource/presets", {signal}).catch(() => ({presets: []})),
    call("GET", "/folders", {signal}).catch(() => []),
  ]);
  const rank = (img) => (img.installed ? 0 : 2) + (img.aliases?.length ? 0 : 1);
  const images = (imageData.images || []).slice().sort((a, b) => rank(a) - rank(b) || imageRef(a).localeCompare(imageRef(b)));
  const wanted = query.get("image") || "python";
  const image = h("select", {id: "new-image", name: "image", required: true},
    images.map((img) => h("option", {value: imageRef(img), selected: imageRef(img) === wanted},
      (img.aliases?.length ? `${img.aliases[0]} (${img.name}:${img.tag})` : imageRef(img)) + (img.installed ? "" : " (to be pulled)"))));
  const name = h("input", {id: "new-name", name: "name", placeholder: "optional: 4-64 letters, digits, - _ .",
    pattern: "[A-Za-z0-9_][A-Za-z0-9_.\\-]{2,62}[A-Za-z0-9_]", value: query.get("name") || ""});
  const presets = presetData.presets || [];
  const preset = h("select", {id: "new-preset", name: "preset"},
    h("option", {value: ""}, "custom resources"),
    presets.map((p) => h("option", {value: p.name}, `${p.name} (${slots(p.resource_slots)})`)));
  const cpu = h("input", {id: "new-cpu", name: "cpu", type: "number", min: "1", step: "1", value: "1"});
  const mem = h("input", {id: "new-mem", name: "mem", value: "512m", placeholder: "e.g. 512m, 2g"});
  const custom = h("div", {class: "row"}, h("label", {}, "CPU cores", cpu), h("label", {}, "Memory", mem));
  preset.addEventListener("change", () => { custom.hidden = !!preset.value; });
  const usable = folders.filter((f) => f.status === "ready" && !f.name.startsWith("."));
  const mounts = h("fieldset", {class: "mounts", id: "new-mounts"}, h("legend", {}, "Folders to mount (at /home/work/NAME)"),
    usable.length ? usable.map((f) => h("label", {class: "inline"},
      h("input", {type: "checkbox", name: "mount", value: f.name}), ` ${f.name}`,
      h("span", {class: "muted small"}, ` ${f.permission}`)))
      : h("p", {class: "muted small"}, "You have no folders yet."));
  const submit = h("button", {type: "submit", class: "primary", id: "new-submit"}, "Start");
  const form = h("form", {class: "card form", id: "new-session-form"},
    h("label", {}, "Image", image), h("label", {}, "Name", name),
    presets.length ? h("label", {}, "Preset", preset) : null, custom, mounts,
    h("div", {class: "form-actions"}, submit, h("a", {href: "/sessions", class: "button secondary"}, "Cancel")));
  main.append(form);

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    once(submit, problem, async () => {
      const chosen = presets.find((p) => p.name === preset.value);
      const resources = chosen ? {...chosen.resource_slots} : {cpu: Number(cpu.value) || 1, mem: memInput(mem.value)};
      const config = {resources};
      if (chosen?.shared_memory) config.resource_opts = {shmem: chosen.shared_memory};
      const picked = [...mounts.querySelectorAll("input[name=mount]:checked")].map((i) => i.value);
      if (picked.length) config.mounts = picked;
      const sessionName = name.value.trim() || randomName();
      // enqueueOnly: answer at once; the session page shows PENDING -> RUNNING live.
      const created = await call("POST", "/session", {
        body: {name: sessionName, image: image.value, type: "interactive", config, enqueueOnly: true},
        signal,
      });
      await navigate(`/sessions/${enc(created.sessionId)}`);
    });
  });
  mem.title = `Memory with a unit (bare numbers are MiB); e.g. 512m = ${bytes(512 * 1024 * 1024)}`;
}

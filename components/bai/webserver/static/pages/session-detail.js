// One session: its status (live), resources and folders, its apps (opened through the app proxy
// in a new tab), an in-browser terminal, and its container logs.
import {ApiError, call, enc, gql} from "../lib/api.js";
import {clear, confirmButton, h, once, showProblem} from "../lib/dom.js";
import {slots, when} from "../lib/format.js";
import {followTask, watch} from "../lib/live.js";
import {openTerminal} from "../lib/terminal.js";

const ENDED = new Set(["TERMINATED", "CANCELLED"]);
const APP_LABELS = {jupyter: "JupyterLab", jupyterlab: "JupyterLab", ttyd: "Web terminal", vscode: "VS Code"};

function randomToken() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const INFO = `query($id: UUID!) { compute_session(id: $id) {
  session_id name image status status_info created_at terminated_at occupied_slots requested_slots mounts service_ports access_key } }`;

function parseJson(value, fallback) {
  if (typeof value !== "string") return value ?? fallback;
  try { return JSON.parse(value); } catch { return fallback; }
}

/** The session by id (GraphQL: it names it) or by name (REST, as typed into the address bar). */
async function fetchInfo(ref, signal) {
  if (UUID.test(ref)) {
    const data = await gql(INFO, {id: ref}, {signal});
    const s = data.compute_session;
    if (!s) throw new ApiError(404, {title: "No such session.", detail: `Session ${ref} does not exist or is not yours.`});
    return {id: s.session_id, name: s.name, image: s.image, status: s.status, statusInfo: s.status_info,
            creationTime: s.created_at, terminationTime: s.terminated_at, mounts: s.mounts,
            occupiedSlots: parseJson(s.occupied_slots, {}), requestedSlots: parseJson(s.requested_slots, {}),
            servicePorts: parseJson(s.service_ports, []), accessKey: s.access_key};
  }
  const got = await call("GET", `/session/${enc(ref)}`, {signal});
  return {...got, id: ref, name: ref};
}

/** Start the app and send the tab (opened at the click, so no popup blocker interferes) to it. */
async function openApp(sessionId, app, tab) {
  const body = {app};
  let redirect = "/";
  if (app === "jupyter" || app === "jupyterlab") {
    const token = randomToken();
    body.envs = JSON.stringify({JUPYTER_TOKEN: token});
    redirect = `/lab?token=${token}`;
  }
  const answer = await call("POST", `/session/${enc(sessionId)}/start-service`, {body});
  const query = new URLSearchParams({token: answer.token, session_id: sessionId, app, protocol: "http", redirect});
  tab.location.href = `${answer.wsproxy_addr}/v2/proxy/auth?${query}`;
}

/**
 * "Save as image" (POST /session/{ref}/imagify, the owner's RUNNING session): a name, then the
 * background task followed live to the new image's reference (or the manager's refusal / the
 * task's failure). update(info, isOwner) shows it while it applies or a save is under way.
 */
function saveAsImage(signal) {
  const slot = h("div", {class: "problem-slot", id: "imagify-problem"});
  const name = h("input", {id: "imagify-name", name: "image_name", required: true, maxlength: 128,
    pattern: "[a-zA-Z0-9._\\-]+", placeholder: "letters, digits, . - _"});
  const submit = h("button", {type: "submit", class: "primary", id: "imagify-submit"}, "Save as image");
  const progress = h("span", {class: "muted small", id: "imagify-progress"});
  const result = h("div", {id: "imagify-result", role: "status"});
  const form = h("form", {class: "inline-form", id: "imagify-form"}, h("label", {class: "inline"}, "Image name", name), submit, progress);
  const el = h("section", {id: "session-imagify", hidden: true},
    h("h2", {}, "Save as image"),
    h("p", {class: "muted small"}, "Commits this session's container as an image only you can use."), form, slot, result);
  let current = null;
  let saving = false;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    once(submit, slot, async () => {
      saving = true;
      clear(result);
      progress.textContent = "starting…";
      try {
        const started = await call("POST", `/session/${enc(current.id)}/imagify`, {body: {image_name: name.value.trim()}, signal});
        progress.textContent = "committing…";
        const reference = await followTask(started.task_id, {signal, onProgress: (p) => {
          progress.textContent = p.message || (p.total ? `${p.current} / ${p.total}` : "committing…");
        }});
        clear(result, h("p", {class: "notice"}, "Saved as ", h("code", {id: "imagify-reference"}, reference), ". ",
          h("a", {href: `/sessions/new?image=${encodeURIComponent(reference)}`, id: "imagify-start"}, "Start a session from it")));
      } finally {
        saving = false;
        progress.textContent = "";
      }
    });
  });
  return {el, update(info, isOwner) {
    current = info;
    const applies = isOwner && info.status === "RUNNING";
    submit.disabled = !applies || saving;
    el.hidden = !applies && !saving && !result.childElementCount && !slot.childElementCount;
  }};
}

export async function render({main, params, signal, navigate, user}) {
  const ref = params.ref;
  const problem = h("div", {class: "problem-slot", id: "session-problem"});
  const title = h("h1", {id: "session-title"}, ref);
  const status = h("span", {id: "session-status", class: "status"}, "…");
  const facts = h("dl", {class: "facts", id: "session-facts"});
  const apps = h("div", {class: "apps", id: "session-apps"});
  const termBox = h("div", {class: "terminal", id: "session-terminal"});
  const termState = h("span", {class: "muted small", id: "terminal-state", dataset: {state: "idle"}});
  const openTerm = h("button", {type: "button", class: "primary", id: "open-terminal", disabled: true}, "Open terminal");
  const logs = h("pre", {class: "logs", id: "session-logs", hidden: true});
  const showLogs = h("button", {type: "button", class: "secondary", id: "show-logs"}, "Show logs");
  const destroy = confirmButton("Destroy", "Really destroy?", (btn) => once(btn, problem, async () => {
    await call("DELETE", `/session/${enc(info?.id || ref)}`, {query: owner(), signal});
    await navigate("/sessions");
  }), {id: "destroy-session"});

  main.append(
    h("p", {class: "crumbs"}, h("a", {href: "/sessions"}, "Sessions"), " / "),
    h("div", {class: "page-head"}, title, status, h("span", {class: "grow"}), destroy),
    problem, facts,
    h("section", {}, h("h2", {}, "Apps"), apps),
    h("section", {}, h("h2", {}, "Terminal"), h("div", {class: "toolbar"}, openTerm, termState), termBox),
    h("section", {}, h("h2", {}, "Logs"), h("div", {class: "toolbar"}, showLogs), logs));
  const imageSave = saveAsImage(signal);
  main.append(imageSave.el);

  let info = null;
  let terminal = null;
  // An admin looking at someone else's session names its owner on the calls that take it.
  const owner = () => (info?.accessKey && user && info.accessKey !== user.accessKey ? {owner_access_key: info.accessKey} : undefined);

  const paint = () => {
    title.textContent = info.name;
    document.title = `${info.name} · bai`;
    status.textContent = info.status + (info.statusInfo ? ` (${info.statusInfo})` : "");
    status.className = `status status-${info.status.toLowerCase()}`;
    status.dataset.status = info.status;
    main.dataset.sessionStatus = info.status;
    clear(facts,
      h("dt", {}, "Image"), h("dd", {}, info.image),
      h("dt", {}, "Resources"), h("dd", {}, slots(info.occupiedSlots && Object.keys(info.occupiedSlots).length ? info.occupiedSlots : info.requestedSlots)),
      h("dt", {}, "Folders"), h("dd", {}, (info.mounts || []).join(", ") || "none"),
      h("dt", {}, "Created"), h("dd", {}, when(info.creationTime)),
      info.terminationTime ? [h("dt", {}, "Ended"), h("dd", {}, when(info.terminationTime))] : null);
    const running = info.status === "RUNNING";
    imageSave.update(info, !info.accessKey || !user || info.accessKey === user.accessKey);
    openTerm.disabled = !running || !!terminal;
    const ports = (info.servicePorts || []).filter((p) => p.protocol === "http" || p.protocol === "preopen");
    clear(apps, !running ? h("p", {class: "muted"}, ENDED.has(info.status) ? "The session has ended." : "Apps open once the session is RUNNING.")
      : ports.length ? ports.map((p) => {
        const button = h("button", {type: "button", class: "secondary", dataset: {app: p.name}}, `Open ${APP_LABELS[p.name] || p.name}`);
        button.addEventListener("click", () => {
          const tab = window.open("", "_blank");
          if (tab) tab.opener = null;
          once(button, problem, async () => {
            if (!tab) throw new ApiError(0, {title: "The browser blocked the new tab", detail: "Allow pop-ups for this site."});
            try { await openApp(info.id, p.name, tab); } catch (err) { tab.close(); throw err; }
          });
        });
        return button;
      }) : h("p", {class: "muted"}, "This image has no apps."));
  };

  const load = async () => {
    try {
      info = await fetchInfo(ref, signal);
      showProblem(problem, null);
      paint();
      if (location.hash === "#terminal" && info.status === "RUNNING" && !terminal) startTerminal();
    } catch (err) {
      if (err.name !== "AbortError") showProblem(problem, err);
    }
  };

  const startTerminal = async () => {
    await once(openTerm, problem, async () => {
      if (terminal) return;
      clear(termBox);
      terminal = await openTerminal(termBox, info.id, {signal, query: owner(), onState: (state, why) => {
        termState.dataset.state = state;
        termState.textContent = state === "closed" ? `closed: ${why}` : state;
        if (state === "closed") { terminal = null; openTerm.disabled = info?.status !== "RUNNING"; openTerm.textContent = "Reopen terminal"; }
      }});
    });
    openTerm.disabled = !!terminal || info?.status !== "RUNNING"; // one terminal per page at a time
  };
  openTerm.addEventListener("click", startTerminal);

  showLogs.addEventListener("click", () => once(showLogs, problem, async () => {
    const answer = await call("GET", `/session/${enc(info?.id || ref)}/logs`, {query: owner(), signal});
    logs.textContent = answer?.result?.logs || "(no log lines yet)";
    logs.hidden = false;
    showLogs.textContent = "Refresh logs";
    logs.scrollTop = logs.scrollHeight;
  }));

  await load();
  if (!info) return;
  // The session's own events; the list is re-read on each (its statusInfo too).
  watch({signal, query: UUID.test(info.id) ? {sessionId: info.id, scope: "*"} : {name: info.name, scope: "*"}, onChange: () => load(), pollMs: 2000});
}

// The live session list: the caller's sessions (admins: everyone they may see), refreshed on
// every session event; status, resources, and actions (open, terminal, destroy).
import {call, enc, gql} from "../lib/api.js";
import {isAdmin} from "../lib/auth.js";
import {clear, confirmButton, h, once, showProblem} from "../lib/dom.js";
import {ago, slots} from "../lib/format.js";
import {watch} from "../lib/live.js";

const ACTIVE = "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RESTARTING,RUNNING_DEGRADED,TERMINATING,ERROR";
const ENDED = "TERMINATED,CANCELLED";
const LIMIT = 100;

const QUERY = `query($limit: Int!, $offset: Int!, $status: String) {
  compute_session_list(limit: $limit, offset: $offset, status: $status, order: "-created_at") {
    total_count
    items { session_id name image status status_info created_at occupying_slots requested_slots mounts user_email access_key type }
  }
}`;

function shortImage(image) {
  return String(image || "").replace(/^bai\.local\//, "");
}

function row(s, onDestroy, showOwner) {
  const ref = s.session_id;
  const live = !["TERMINATED", "CANCELLED", "TERMINATING"].includes(s.status);
  return h("tr", {dataset: {sessionName: s.name, sessionId: ref, status: s.status}},
    h("td", {}, h("a", {href: `/sessions/${enc(ref)}`, class: "session-link"}, s.name),
      showOwner && s.user_email !== showOwner ? h("div", {class: "muted small"}, s.user_email) : null),
    h("td", {}, h("span", {class: `status status-${s.status.toLowerCase()}`}, s.status),
      s.status_info ? h("span", {class: "muted small"}, ` ${s.status_info}`) : null),
    h("td", {}, shortImage(s.image)),
    h("td", {class: "small"}, slots(s.occupying_slots) || slots(s.requested_slots)),
    h("td", {class: "small"}, (s.mounts || []).join(", ")),
    h("td", {class: "small", title: s.created_at}, ago(s.created_at)),
    h("td", {class: "actions"},
      s.status === "RUNNING" ? h("a", {href: `/sessions/${enc(ref)}#terminal`, class: "button secondary"}, "Terminal") : null,
      live ? confirmButton("Destroy", "Really destroy?", (btn) => onDestroy(btn, s), {dataset: {action: "destroy"}}) : null));
}

export async function render({main, signal, user}) {
  // Admins see others' sessions too: those rows name their owner.
  const showOwner = isAdmin(user) ? (user.email || "-") : null;
  const problem = h("div", {class: "problem-slot"});
  const mode = h("span", {id: "session-live", class: "live-mode muted small", dataset: {mode: "connecting"}}, "connecting…");
  const showEnded = h("input", {type: "checkbox", id: "show-ended"});
  const body = h("tbody", {id: "session-rows"});
  const count = h("span", {class: "muted small", id: "session-count"});
  const table = h("table", {class: "table", id: "session-list"},
    h("thead", {}, h("tr", {}, ["Name", "Status", "Image", "Resources", "Folders", "Created", ""].map((t) => h("th", {}, t)))),
    body);
  main.append(
    h("div", {class: "page-head"},
      h("h1", {}, "Sessions"),
      h("a", {href: "/sessions/new", class: "button primary", id: "new-session"}, "Start a session")),
    h("div", {class: "toolbar"}, h("label", {class: "inline"}, showEnded, " show ended"), count, mode),
    problem, table);

  let loading = null;
  let again = false;
  const load = async () => {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      do {
        again = false;
        try {
          const data = await gql(QUERY, {limit: LIMIT, offset: 0, status: showEnded.checked ? `${ACTIVE},${ENDED}` : ACTIVE}, {signal});
          const list = data.compute_session_list;
          showProblem(problem, null);
          clear(body, list.items.length
            ? list.items.map((s) => row(s, destroy, showOwner))
            : h("tr", {class: "empty"}, h("td", {colspan: 7}, "No sessions. ", h("a", {href: "/sessions/new"}, "Start one."))));
          count.textContent = list.total_count > LIMIT ? `${LIMIT} of ${list.total_count}` : `${list.total_count} session(s)`;
          if (!table.dataset.loaded) {
            // the rows are in the DOM; the mark is set when the frame showing them is drawn
            requestAnimationFrame(() => setTimeout(() => performance.mark("bai:session-list-painted"), 0));
          }
          table.dataset.loaded = "1";
        } catch (err) {
          if (err.name === "AbortError") return;
          showProblem(problem, err);
        }
      } while (again && !signal.aborted);
    })();
    try { await loading; } finally { loading = null; }
  };

  async function destroy(button, s) {
    await once(button, problem, async () => {
      // an admin ending someone else's session names its owner, as the API wants
      const query = user && s.access_key !== user.accessKey ? {owner_access_key: s.access_key} : undefined;
      await call("DELETE", `/session/${enc(s.session_id)}`, {query, signal});
      await load();
    });
  }

  showEnded.addEventListener("change", () => load());
  await load();
  watch({signal, query: {scope: "session"}, onChange: () => load(),
         onMode: (m) => { mode.dataset.mode = m; mode.textContent = m === "live" ? "● live" : "polling"; }});
}

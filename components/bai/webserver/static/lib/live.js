// Live updates of sessions: the manager's /events/session server-sent events through /func/;
// when the stream fails (a proxy that buffers, the manager restarting) fall back to polling and
// try the stream again later. The caller just gets "something changed" calls, coalesced.
import {events} from "./api.js";

const SESSION_EVENTS = ["session_enqueued", "session_scheduled", "session_started", "session_cancelled",
  "session_terminating", "session_terminated", "session_success", "session_failure"];
const KERNEL_EVENTS = ["kernel_preparing", "kernel_pulling", "kernel_creating", "kernel_started",
  "kernel_cancelled", "kernel_terminating", "kernel_terminated"];

/**
 * watch({signal, query, onChange, onMode, pollMs}): onChange(event|null) at most every 250 ms;
 * onMode("live" | "polling") says how updates arrive now.
 */
export function watch({signal, query = {}, onChange, onMode = () => {}, pollMs = 3000, retryMs = 20000}) {
  let source = null;
  let pollTimer = null;
  let retryTimer = null;
  let pending = null;
  let lastEvent = null;

  const fire = (event) => {
    lastEvent = event;
    if (pending) return;
    pending = setTimeout(() => { pending = null; if (!signal.aborted) onChange(lastEvent); }, 250);
  };
  const poll = () => {
    clearInterval(pollTimer);
    pollTimer = setInterval(() => fire(null), pollMs);
  };
  const connect = () => {
    clearTimeout(retryTimer);
    if (signal.aborted) return;
    source = events("/events/session", query);
    for (const name of [...SESSION_EVENTS, ...KERNEL_EVENTS]) {
      source.addEventListener(name, (ev) => {
        let data = {};
        try { data = JSON.parse(ev.data); } catch { /* keep going */ }
        fire({name, data});
      });
    }
    source.addEventListener("open", () => {
      clearInterval(pollTimer);
      pollTimer = null;
      onMode("live");
      fire(null); // anything that changed while the stream was down
    });
    source.addEventListener("error", () => {
      // EventSource would retry by itself; a stream refused (4xx) or cut repeatedly is better
      // replaced by polling for a while.
      source.close();
      source = null;
      onMode("polling");
      poll();
      retryTimer = setTimeout(connect, retryMs);
    });
  };
  signal.addEventListener("abort", () => {
    source?.close();
    clearInterval(pollTimer);
    clearTimeout(retryTimer);
    clearTimeout(pending);
  });
  connect();
}

/**
 * Follow a manager background task (GET /events/background-task?task_id=) to its end:
 * resolves with its final message (bgtask_done), rejects with an ApiError-like {title, detail}
 * when it fails, is cancelled, or its stream cannot be read; onProgress({message, current, total})
 * for each bgtask_updated. EventSource reconnects by itself after a cut (the manager answers an
 * ended task's final record at once); `maxErrors` cuts in a row without a record give up.
 */
export function followTask(taskId, {signal, onProgress = () => {}, maxErrors = 5} = {}) {
  return new Promise((resolve, reject) => {
    const source = events("/events/background-task", {task_id: taskId});
    let errors = 0;
    const end = (fn, value) => { source.close(); signal?.removeEventListener("abort", abort); fn(value); };
    const abort = () => end(reject, new DOMException("The page was left", "AbortError"));
    signal?.addEventListener("abort", abort);
    const data = (ev) => { try { return JSON.parse(ev.data) || {}; } catch { return {}; } };
    source.addEventListener("bgtask_updated", (ev) => {
      errors = 0;
      const d = data(ev);
      onProgress({message: d.message || "", current: Number(d.current_progress) || 0, total: Number(d.total_progress) || 0});
    });
    source.addEventListener("bgtask_done", (ev) => end(resolve, data(ev).message || ""));
    for (const [name, title] of [["bgtask_failed", "The task failed"], ["bgtask_cancelled", "The task was cancelled"]]) {
      source.addEventListener(name, (ev) => end(reject, {title, detail: data(ev).message || "", status: 200}));
    }
    source.addEventListener("error", () => {
      errors += 1;
      if (source.readyState === EventSource.CLOSED || errors >= maxErrors) {
        end(reject, {title: "The task's progress cannot be followed",
          detail: "The event stream was refused or cut; the task may still be running.", status: 0});
      }
    });
  });
}

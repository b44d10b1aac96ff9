// The only way the UI talks to the server: `/server/*` (login), `/func/<manager path>` (the
// manager, signed by the webserver with the logged-in user's keypair) and `/pipe/<manager path>`
// (websockets). Failures become ApiError with the problem+json title and detail.

const API_VERSION = "v8.20240315";
// The webserver's CSRF rule: every state-changing call and websocket carries the login's token
// (answered by /server/login and /server/login-check; kept in memory only, never in storage).
const CSRF_HEADER = "X-BackendAI-CSRF-Token";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

export class ApiError extends Error {
  constructor(status, problem = {}) {
    const title = problem.title || (status ? `Request failed (HTTP ${status})` : "The server cannot be reached");
    super(title);
    this.name = "ApiError";
    this.status = status;
    this.type = problem.type || "";
    this.title = title;
    this.detail = describe(problem);
    this.problem = problem;
  }
}

// The manager's problems carry `msg` (and per-field `data`), the webserver's `detail`; a few of
// the original's answers are plain `{"error_msg": ...}` (e.g. update-password's mismatch).
function describe(problem) {
  const parts = [];
  const text = problem.detail || problem.details || problem.msg || problem.error_msg;
  if (text && text !== problem.title) parts.push(String(text));
  if (problem.data && typeof problem.data === "object" && !Array.isArray(problem.data)) {
    for (const [field, why] of Object.entries(problem.data)) parts.push(`${field}: ${typeof why === "string" ? why : JSON.stringify(why)}`);
  }
  return parts.join(" — ");
}

let csrf = "";
export function setCsrfToken(token) { csrf = token || ""; }
export function csrfToken() { return csrf; }

/** Headers every call carries; state-changing ones add the CSRF token. */
export function callHeaders(method, extra = {}) {
  const headers = {"X-BackendAI-Version": API_VERSION, ...extra};
  if (!SAFE_METHODS.has(method.toUpperCase())) {
    const token = csrfToken();
    if (token) headers[CSRF_HEADER] = token;
  }
  return headers;
}

let onUnauthorized = () => {};
/** What to do when a /func/ call answers 401 (the login expired or was ended elsewhere). */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function problemOf(resp) {
  const text = await resp.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") return body;
  } catch { /* not JSON: a proxy's page */ }
  return {title: `${resp.status} ${resp.statusText}`.trim(), detail: text.slice(0, 200)};
}

async function send(url, method, {body, query, signal, headers = {}} = {}) {
  const qs = query ? "?" + new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null)) : "";
  const init = {method, headers: callHeaders(method, headers), signal, credentials: "same-origin"};
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(url + qs, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, {title: "The server cannot be reached", detail: err.message});
  }
  return resp;
}

async function parse(resp) {
  if (resp.status === 204) return null;
  const text = await resp.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

/** A manager call through the webserver: call("GET", "/folders"), call("POST", "/session", {body}). */
export async function call(method, path, opts = {}) {
  const resp = await send("/func" + path, method, opts);
  if (!resp.ok) {
    const problem = await problemOf(resp);
    const err = new ApiError(resp.status, problem);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  return parse(resp);
}

/** A GraphQL query or mutation (the manager's /admin/gql); GraphQL errors become an ApiError. */
export async function gql(query, variables = {}, opts = {}) {
  const body = await call("POST", "/admin/gql", {...opts, body: {query, variables}});
  if (body?.errors?.length) {
    throw new ApiError(200, {title: "The request was refused", detail: body.errors.map((e) => e.message).join("; ")});
  }
  return body.data;
}

/** The webserver's own endpoints (login, login-check, logout): answers as they come. */
export async function server(path, body, opts = {}) {
  const resp = await send("/server" + path, "POST", {...opts, body: body ?? {}});
  return {status: resp.status, headers: resp.headers, body: resp.ok ? await parse(resp) : await problemOf(resp)};
}

/** A websocket to a manager stream path, through the webserver's /pipe/. */
export function pipe(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return new WebSocket(`${scheme}//${location.host}/pipe${path}`);
}

/** Server-sent events of a manager path, through /func/ (a GET: no CSRF token needed). */
export function events(path, query = {}) {
  const qs = new URLSearchParams(query).toString();
  return new EventSource(`/func${path}${qs ? "?" + qs : ""}`, {withCredentials: true});
}

export function enc(segment) { return encodeURIComponent(segment); }

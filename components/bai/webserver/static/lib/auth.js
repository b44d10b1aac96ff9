// Who is logged in, as the webserver's /server/login-check says.
import {server, setCsrfToken} from "./api.js";

const ADMIN_ROLES = new Set(["superadmin", "admin", "monitor"]);
let current = null;

/** {accessKey, role, status, email} or null when nobody is logged in. */
export function user() { return current; }

export function isAdmin(u = current) { return !!u && ADMIN_ROLES.has(u.role); }

function fromData(data, email) {
  if (!data) return null;
  return {accessKey: data.access_key, role: data.role, status: data.status,
          email: data.email || data.user_id || email || sessionStorage.getItem("bai.email") || ""};
}

export async function check() {
  const {status, body} = await server("/login-check");
  current = status === 200 && body?.authenticated ? fromData(body.data) : null;
  setCsrfToken(current ? body.csrf_token : "");
  return current;
}

/** Log in; answers {ok: true} or {ok: false, title, detail, retryAfter}. */
export async function login(username, password) {
  const {status, headers, body} = await server("/login", {username, password});
  if (status === 200 && body?.authenticated) {
    sessionStorage.setItem("bai.email", username);
    current = fromData(body.data, username);
    setCsrfToken(body.csrf_token);
    return {ok: true};
  }
  const data = (status === 200 ? body?.data : body) || {};
  const retryAfter = Number(headers.get("Retry-After")) || null;
  if (status === 429) {
    return {ok: false, title: "Too many login attempts",
            detail: `Try again ${retryAfter ? `in ${retryAfter} s` : "later"}.`, retryAfter};
  }
  if (status === 400 && /already logged in/i.test(data.title || data.detail || "")) {
    await check();
    return current ? {ok: true} : {ok: false, title: data.title, detail: data.detail || ""};
  }
  const title = data.title || (status === 200 ? "Wrong email or password" : `Login failed (HTTP ${status})`);
  const detail = data.details || data.detail || data.msg || "";
  return {ok: false, title: /credential|password|auth/i.test(title + detail) ? "Wrong email or password" : title,
          detail: detail && detail !== title ? detail : ""};
}

export async function logout() {
  await server("/logout").catch(() => null);
  current = null;
  setCsrfToken("");
  sessionStorage.removeItem("bai.email");
}

// Boot: who is logged in, the shell (menu, user, logout), then the router.
import {setUnauthorizedHandler} from "./lib/api.js";
import {check, isAdmin, logout, user} from "./lib/auth.js";
import {banner, clear, h} from "./lib/dom.js";
import {menuEntries, navigate, onRouteChange, start} from "./lib/router.js";

const header = document.getElementById("shell-header");
const nav = document.getElementById("shell-nav");

function paintShell(route) {
  const u = user();
  header.hidden = !u || !route || route.public;
  if (header.hidden) return;
  document.getElementById("shell-user-name").textContent = `${u.email || u.accessKey} (${u.role})`;
  document.body.dataset.role = isAdmin(u) ? "admin" : "user";
  const here = location.pathname;
  clear(nav, menuEntries(u).map((r) => h("a", {
    href: r.path, class: here === r.path || here.startsWith(r.path + "/") ? "active" : "",
    dataset: {menu: r.path},
  }, r.menu.label)));
}

onRouteChange(paintShell);

const logoutButton = document.getElementById("shell-logout");
logoutButton.addEventListener("click", async () => {
  logoutButton.disabled = true;
  try {
    await logout();
  } finally {
    logoutButton.disabled = false;
  }
  await navigate("/login?bye=1");
});

// A /func/ call answered 401: the login expired or was ended elsewhere (logout, admin).
let redirecting = false;
setUnauthorizedHandler(async () => {
  if (redirecting || location.pathname === "/login") return;
  redirecting = true;
  await check().catch(() => null);
  redirecting = false;
  if (!user()) {
    const next = location.pathname + location.search;
    await navigate(`/login?expired=1&next=${encodeURIComponent(next)}`, {replace: true});
  }
});

try {
  await check();
} catch {
  banner("The server cannot be reached; retrying when you reload the page.", "error");
}
await start();

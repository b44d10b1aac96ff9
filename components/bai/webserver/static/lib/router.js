// History-API router: matches location.pathname against routes.js, checks login and role,
// loads the page module on first use and calls its render(ctx) with:
//   ctx.main      the element the page owns (emptied before each page)
//   ctx.params    the :name parts of the path (decoded), ctx.query the URLSearchParams
//   ctx.signal    an AbortSignal that fires when the user leaves the page: pass it to fetch,
//                 close streams and timers on it
//   ctx.navigate  navigate(url, {replace}) without a reload
//   ctx.user      {accessKey, role, status, email} (null on public pages when logged out)
import {routes} from "../routes.js";
import {isAdmin, user} from "./auth.js";
import {banner, clear, h, problemBox} from "./dom.js";

const compiled = routes.map((route) => {
  const names = [];
  const pattern = route.path.replace(/\/:([A-Za-z_]+)/g, (_, name) => { names.push(name); return "/([^/]+)"; });
  return {...route, regex: new RegExp(`^${pattern}/?$`), names};
});

let controller = null;
let onChange = () => {};

/** Called after every page change with the matched route (the shell updates its menu). */
export function onRouteChange(fn) { onChange = fn; }

function allowed(route, u) {
  return (!route.admin || isAdmin(u)) && (!route.roles || (!!u && route.roles.includes(u.role)));
}

export function menuEntries(u = user()) {
  return compiled.filter((r) => r.menu && allowed(r, u))
    .sort((a, b) => a.menu.order - b.menu.order);
}

/** Whether `u` may open the page at `path` (links to pages they may not open are left out). */
export function mayOpen(path, u = user()) {
  const found = match(path);
  return !!found && allowed(found.route, u);
}

function match(pathname) {
  for (const route of compiled) {
    const m = route.regex.exec(pathname);
    if (m) {
      const params = {};
      route.names.forEach((name, i) => { params[name] = decodeURIComponent(m[i + 1]); });
      return {route, params};
    }
  }
  return null;
}

/** Start loading the page module of `url` (e.g. while a login is in flight): no paint waits for it later. */
export function prefetch(url) {
  const found = match(new URL(url, location.origin).pathname);
  if (found?.route.page) found.route.page().catch(() => null);
}

export function navigate(url, {replace = false} = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  return render();
}

export async function render() {
  controller?.abort();
  controller = new AbortController();
  const {signal} = controller;
  const main = document.getElementById("shell-main");
  banner(null);
  // the last page's marks go first: a refused or unknown page must not look ready as the one before
  for (const key of Object.keys(main.dataset)) delete main.dataset[key];
  const found = match(location.pathname);
  if (!found) {
    onChange(null);
    document.title = "Not found · bai";
    clear(main, h("h1", {}, "Not found"), h("p", {}, "No page here. ", h("a", {href: "/sessions"}, "Go to your sessions.")));
    main.dataset.page = "not-found";
    return;
  }
  const {route, params} = found;
  if (route.redirect) return navigate(route.redirect, {replace: true});
  const u = user();
  if (!route.public && !u) {
    const next = location.pathname + location.search;
    return navigate(`/login?next=${encodeURIComponent(next)}`, {replace: true});
  }
  onChange(route);
  document.title = `${route.title || "bai"} · bai`;
  if (!allowed(route, u)) {
    // an admin refused a page of `roles` (e.g. a domain admin, the agents) is told whose it is
    const narrowed = isAdmin(u) && route.roles;
    clear(main, h("h1", {}, "Not allowed"), problemBox(narrowed
      ? {title: `This page is for ${route.roles.map((r) => r + "s").join(" and ")}`,
         detail: `Your account (${u.role}) cannot open it: ${route.roles[0]} privilege required.`, status: 403}
      : {title: "This page is for administrators", detail: "Your account cannot open it.", status: 403}));
    main.dataset.page = "forbidden";
    return;
  }
  main.dataset.page = route.path;
  try {
    const page = await route.page();
    if (signal.aborted) return;
    clear(main);
    await page.render({main, params, query: new URLSearchParams(location.search), signal, navigate, user: u});
    if (!signal.aborted) main.dataset.ready = route.path;
  } catch (err) {
    if (signal.aborted || err?.name === "AbortError") return;
    clear(main, h("h1", {}, route.title || "Error"), problemBox(err));
  }
}

/** Follow same-origin links without a reload; back/forward re-render. */
export function start() {
  document.addEventListener("click", (ev) => {
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    const a = ev.target.closest("a[href]");
    if (!a || a.target || a.hasAttribute("download") || a.origin !== location.origin) return;
    if (!match(a.pathname)) return;
    ev.preventDefault();
    navigate(a.pathname + a.search + a.hash);
  });
  window.addEventListener("popstate", () => render());
  return render();
}

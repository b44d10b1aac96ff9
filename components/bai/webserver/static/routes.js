// The route table: one entry per page. A page is an ES module under pages/ whose
// `render(ctx)` fills ctx.main (see lib/router.js for ctx). `menu` puts it in the top
// navigation (ordered by `order`); `admin: true` shows it only to admins and refuses it to others
// (the manager refuses their API calls anyway); `roles: [...]` narrows it to those roles (a page
// whose lists the manager shows to superadmins and monitors only, not to domain admins);
// `public: true` needs no login.
export const routes = [
  {path: "/login", public: true, title: "Log in", page: () => import("./pages/login.js")},
  {path: "/", redirect: "/sessions"},
  {path: "/sessions", title: "Sessions", menu: {label: "Sessions", order: 10}, page: () => import("./pages/sessions.js")},
  {path: "/sessions/new", title: "Start a session", page: () => import("./pages/session-new.js")},
  {path: "/sessions/:ref", title: "Session", page: () => import("./pages/session-detail.js")},
  {path: "/folders", title: "Folders", menu: {label: "Folders", order: 20}, page: () => import("./pages/folders.js")},
  {path: "/folders/:name", title: "Folder", page: () => import("./pages/folder.js")},
  // W3: usage and admin pages (static/pages/usage.js, static/pages/admin/) register below.
  {path: "/usage", title: "Usage", menu: {label: "Usage", order: 30}, page: () => import("./pages/usage.js")},
  {path: "/settings", title: "Settings", menu: {label: "Settings", order: 40}, page: () => import("./pages/settings.js")},
  {path: "/images", title: "Images", menu: {label: "Images", order: 35}, page: () => import("./pages/images.js")},
  {path: "/admin", admin: true, redirect: "/admin/users", menu: {label: "Admin", order: 90}},
  {path: "/admin/users", admin: true, title: "Users", page: () => import("./pages/admin/users.js")},
  {path: "/admin/keypairs", admin: true, title: "Keypairs", page: () => import("./pages/admin/keypairs.js")},
  {path: "/admin/projects", admin: true, title: "Projects", page: () => import("./pages/admin/projects.js")},
  {path: "/admin/policies", admin: true, title: "Resource policies", page: () => import("./pages/admin/policies.js")},
  {path: "/admin/resource-groups", admin: true, roles: ["superadmin", "monitor"], title: "Resource groups", page: () => import("./pages/admin/resource-groups.js")},
  {path: "/admin/agents", admin: true, roles: ["superadmin", "monitor"], title: "Agents", page: () => import("./pages/admin/agents.js")},
];

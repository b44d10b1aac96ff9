// Log in: user id (email) and password -> /server/login. Clear messages for a wrong password,
// throttling and an expired login; back to the page the user wanted afterwards.
import {login, user} from "../lib/auth.js";
import {h, once, problemBox, showProblem} from "../lib/dom.js";
import {prefetch} from "../lib/router.js";

function safeNext(next) {
  // Only a path of this site: never an absolute or protocol-relative URL (an open redirect).
  return next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/login") ? next : "/sessions";
}

export async function render({main, query, navigate}) {
  const next = safeNext(query.get("next"));
  if (user()) return navigate(next, {replace: true});
  const slot = h("div", {class: "problem-slot", id: "login-problem"});
  if (query.get("expired")) {
    slot.append(problemBox({title: "Your login has expired", detail: "Log in again to continue."}));
  } else if (query.get("bye")) {
    slot.append(h("p", {class: "notice", id: "login-bye"}, "You have logged out."));
  }
  const email = h("input", {id: "login-email", name: "username", type: "text", autocomplete: "username", required: true, autofocus: true});
  const password = h("input", {id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true});
  const submit = h("button", {id: "login-submit", type: "submit", class: "primary"}, "Log in");
  const form = h("form", {class: "card login-card", id: "login-form"},
    h("h1", {}, "Log in to bai"),
    h("label", {}, "Email or user id", email),
    h("label", {}, "Password", password),
    slot,
    submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    once(submit, slot, async () => {
      performance.mark("bai:login-submit"); // bench/web_ui.py measures from here
      prefetch(next); // the next page's code loads while the password is checked
      const result = await login(email.value.trim(), password.value);
      if (!result.ok) {
        showProblem(slot, result);
        password.select();
        return;
      }
      await navigate(next, {replace: true});
    });
  });
  main.append(h("div", {class: "login-wrap"}, form));
  email.focus();
}

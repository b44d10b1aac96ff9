// Building DOM without innerHTML: every text a user or the server chose lands as a text node,
// so nothing they send can become markup (and the strict CSP forbids inline handlers anyway).

/**
 * h("button", {class: "primary", on: {click: fn}, dataset: {id: "x"}}, "Save")
 * Attributes: `class`, `dataset`, `on` (event listeners), booleans (`disabled`, `hidden`...)
 * and properties (`value`, `checked`) are handled; everything else is setAttribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === "value" || key === "checked" || key === "selected") el[key] = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A problem (an ApiError or any Error) as a box: the problem's title, then its detail. */
export function problemBox(err) {
  const title = err?.title || err?.message || "Something went wrong";
  const detail = err?.detail || "";
  return h("div", {class: "problem", role: "alert", dataset: {status: err?.status ?? ""}},
    h("strong", {class: "problem-title"}, title),
    detail ? h("span", {class: "problem-detail"}, detail) : null);
}

/** Show (or with null: hide) a problem in `slot`, an element kept for it on the page. */
export function showProblem(slot, err) {
  if (!err) clear(slot);
  else clear(slot, problemBox(err));
}

/** The page-wide banner (login expired, connection lost...). */
export function banner(message, kind = "info") {
  const el = document.getElementById("shell-banner");
  if (!message) { el.hidden = true; clear(el); return; }
  el.dataset.kind = kind;
  clear(el, message);
  el.hidden = false;
}

/**
 * Run `action` from a form or button at most once at a time: the control is disabled while it
 * runs (a double click or a double submit sends one request), problems go to `slot`.
 */
export async function once(control, slot, action) {
  if (control.disabled || control.dataset.busy) return undefined;
  control.disabled = true;
  control.dataset.busy = "1";
  if (slot) showProblem(slot, null);
  try {
    return await action();
  } catch (err) {
    if (err?.name === "AbortError") return undefined;
    if (slot) showProblem(slot, err);
    else banner(`${err.title || err.message}${err.detail ? ": " + err.detail : ""}`, "error");
    return undefined;
  } finally {
    delete control.dataset.busy;
    if (control.isConnected) control.disabled = false;
  }
}

/** A button that asks "sure?" by turning into a confirm button for a few seconds (no modal). */
export function confirmButton(label, confirmLabel, onConfirm, attrs = {}) {
  let armed = null;
  const button = h("button", {type: "button", class: "secondary danger", ...attrs}, label);
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = confirmLabel;
      button.classList.add("armed");
      armed = setTimeout(() => { armed = null; button.textContent = label; button.classList.remove("armed"); }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove("armed");
    await onConfirm(button);
  });
  return button;
}

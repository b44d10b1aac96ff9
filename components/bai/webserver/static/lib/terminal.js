// An in-browser terminal: xterm.js (Debian's node-xterm, bundled by the webserver) over the
// manager's pty websocket /stream/session/{ref}/pty through /pipe/. Frames are the original's:
// stdin {type, chars: base64}, resize {rows, cols}, ping; the server sends out {data: base64},
// error {data}. Leaving the page (ctx.signal) closes the socket, which ends the shell.
import {enc, pipe} from "./api.js";

const PING_MS = 20_000;

function ensureCss() {
  if (document.getElementById("xterm-css")) return;
  document.head.append(Object.assign(document.createElement("link"),
    {id: "xterm-css", rel: "stylesheet", href: "/vendor/xterm/xterm.css"}));
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(data) {
  const text = atob(data);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) out[i] = text.charCodeAt(i);
  return out;
}

/**
 * Open a terminal of session `ref` in `container`. onState("connecting" | "open" | "closed", why)
 * tracks the connection. Answers {close()}.
 */
export async function openTerminal(container, ref, {signal, query, onState = () => {}}) {
  ensureCss();
  onState("connecting");
  const {Terminal} = await import("/vendor/xterm/bundle.js");
  if (signal.aborted) return {close() {}};
  // screenReaderMode keeps the visible rows as text in the DOM, for assistive technology.
  const term = new Terminal({cursorBlink: true, screenReaderMode: true, fontSize: 14, scrollback: 5000});
  term.open(container);
  term.fit();
  const qs = query ? "?" + new URLSearchParams(query) : "";
  const ws = pipe(`/stream/session/${enc(ref)}/pty${qs}`);
  const encoder = new TextEncoder();
  const decoder = new TextDecoder("utf-8"); // streaming: a character may straddle two frames
  const send = (frame) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame)); };
  const resize = () => send({type: "resize", rows: term.rows, cols: term.cols});
  let pinger = null;
  let closedByUs = false;

  ws.addEventListener("open", () => {
    resize();
    pinger = setInterval(() => send({type: "ping"}), PING_MS);
    onState("open");
    term.focus();
  });
  ws.addEventListener("message", (ev) => {
    let frame;
    try { frame = JSON.parse(ev.data); } catch { return; }
    if (frame.type === "out") term.write(decoder.decode(fromBase64(frame.data), {stream: true}));
    else if (frame.type === "error") term.write(`\r\n\x1b[31m[bai: ${frame.data}]\x1b[0m\r\n`);
  });
  ws.addEventListener("close", (ev) => {
    clearInterval(pinger);
    if (closedByUs) return;
    term.write(`\r\n\x1b[33m[the terminal has closed${ev.reason ? ": " + ev.reason : ""}]\x1b[0m\r\n`);
    onState("closed", ev.reason || (ev.code === 1000 ? "the shell exited" : `connection lost (${ev.code})`));
  });
  term.on("data", (data) => send({type: "stdin", chars: toBase64(encoder.encode(data))}));
  term.on("resize", resize);
  const refit = () => term.fit();
  window.addEventListener("resize", refit);

  const close = () => {
    closedByUs = true;
    clearInterval(pinger);
    window.removeEventListener("resize", refit);
    ws.close(1000);
    term.destroy();
    onState("closed", "closed");
  };
  signal.addEventListener("abort", close);
  return {close, term};
}

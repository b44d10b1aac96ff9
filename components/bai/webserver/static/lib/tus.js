// Resumable uploads to a folder: the manager's request-upload gives a token for the storage
// proxy's tus 1.0.0 endpoint; the file goes there directly (HEAD for the offset, PATCH from it),
// in chunks, so a dropped connection costs at most one chunk: the upload asks the proxy where it
// stands and goes on. The proxy keeps the partial file out of the folder until the last byte
// (an abandoned upload never shows up as a complete file). The token is remembered for this tab
// (sessionStorage), so "upload again" after a failure resumes rather than restarts.
import {ApiError, call, enc} from "./api.js";

const CHUNK = 8 * 1024 * 1024;
const RETRIES = 8; // about 45 s of a dropped connection, backing off up to 8 s

function storageKey(folder, path, file) {
  return `bai.tus:${folder}:${path}:${file.size}:${file.lastModified}`;
}

function uploadUrl(ticket) {
  const url = new URL(ticket.url);
  url.searchParams.set("token", ticket.token);
  return url.toString();
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); reject(new DOMException("cancelled", "AbortError")); }, {once: true});
  });
}

async function offsetOf(url, signal) {
  const resp = await fetch(url, {method: "HEAD", headers: {"Tus-Resumable": "1.0.0"}, signal, cache: "no-store"});
  if (resp.status === 404 || resp.status === 410 || resp.status === 400 || resp.status === 401) return null; // start over
  if (!resp.ok) throw new ApiError(resp.status, {title: "The storage proxy refused the upload", detail: `HTTP ${resp.status}`});
  return Number(resp.headers.get("Upload-Offset") || 0);
}

/** One PATCH through XMLHttpRequest, for upload progress events. */
function patch(url, blob, offset, {signal, onBytes}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", url);
    xhr.setRequestHeader("Tus-Resumable", "1.0.0");
    xhr.setRequestHeader("Upload-Offset", String(offset));
    xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
    xhr.upload.addEventListener("progress", (ev) => onBytes(offset + ev.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status === 204 || xhr.status === 200) { resolve(Number(xhr.getResponseHeader("Upload-Offset"))); return; }
      let problem = {};
      try { problem = JSON.parse(xhr.responseText); } catch { /* plain text */ }
      const err = new ApiError(xhr.status, {title: problem.title || `Upload refused (HTTP ${xhr.status})`, ...problem});
      err.final = xhr.status === 413 || xhr.status === 403 || xhr.status === 412;
      reject(err);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, {title: "The connection dropped", detail: "resuming"})));
    xhr.addEventListener("abort", () => reject(new DOMException("cancelled", "AbortError")));
    signal?.addEventListener("abort", () => xhr.abort(), {once: true});
    xhr.send(blob);
  });
}

/**
 * Upload `file` to `path` in folder `folder`. onProgress(sentBytes, totalBytes); onRetry(n, error)
 * when the connection dropped and the upload is about to resume. Cancel with
 * `signal` (what was sent is kept for a resume). Throws ApiError with the problem on refusal.
 */
export async function upload(folder, path, file, {signal, onProgress = () => {}, onRetry = () => {}} = {}) {
  const key = storageKey(folder, path, file);
  let ticket = JSON.parse(sessionStorage.getItem(key) || "null");
  let offset = ticket ? await offsetOf(uploadUrl(ticket), signal).catch(() => null) : null;
  if (offset === null) {
    ticket = await call("POST", `/folders/${enc(folder)}/request-upload`, {body: {path, size: file.size}, signal});
    sessionStorage.setItem(key, JSON.stringify(ticket));
    offset = 0;
  }
  const url = uploadUrl(ticket);
  onProgress(offset, file.size);
  let failures = 0;
  let first = true; // a zero-byte file still needs one PATCH to complete
  while (first || offset < file.size) {
    first = false;
    try {
      const end = Math.min(file.size, offset + CHUNK);
      offset = await patch(url, file.slice(offset, end), offset, {signal, onBytes: (n) => onProgress(n, file.size)});
      failures = 0;
      onProgress(offset, file.size);
    } catch (err) {
      if (err.name === "AbortError" || err.final || failures >= RETRIES) {
        if (err.final) sessionStorage.removeItem(key);
        throw err;
      }
      failures += 1;
      onRetry(failures, err);
      await sleep(Math.min(500 * 2 ** failures, 8000), signal);
      let now;
      try {
        now = await offsetOf(url, signal);
      } catch (headErr) {
        if (headErr.name === "AbortError") throw headErr;
        continue; // still cut off: the next PATCH (or its HEAD) tries again
      }
      if (now === null) { sessionStorage.removeItem(key); throw err; } // the proxy forgot it
      offset = now;
    }
  }
  sessionStorage.removeItem(key);
  return offset;
}

/** Send the browser to a download of `path` (a directory: as a zip) from the storage proxy. */
export async function download(folder, path, {archive = false} = {}) {
  const ticket = await call("POST", `/folders/${enc(folder)}/request-download`, {body: {path, archive}});
  const a = document.createElement("a");
  a.href = uploadUrl(ticket) + (archive ? "&archive=true" : "");
  a.download = "";
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
}

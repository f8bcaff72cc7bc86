// The one way the interface talks to the server: same-origin fetch with the session cookie
// (HttpOnly: JavaScript never sees the key), JSON errors turned into one-line messages.
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status; this.code = code; this.body = body;
  }
}

const listeners = new Set();
// Called with an ApiError whenever the server answers 401: the app shows its login.
export function onUnauthorized(fn) { listeners.add(fn); }

async function parse(r) {
  const type = r.headers.get("content-type") || "";
  if (r.status === 204) return null;
  if (type.includes("application/json")) return r.json();
  if (type.startsWith("text/")) return r.text();
  return r.blob();
}

export async function request(method, path, {json, form, body, headers = {}, signal} = {}) {
  const init = {method, headers: {...headers}, credentials: "same-origin", signal};
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;  // FormData: the browser writes the multipart boundary
  } else if (body !== undefined) {
    init.body = body;
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "the server cannot be reached", null);
  }
  const data = await parse(r).catch(() => null);
  if (!r.ok) {
    const err = data && typeof data === "object" && data.error ? data.error : {};
    const message = err.message || (typeof data === "string" && data) || `HTTP ${r.status}`;
    const e = new ApiError(r.status, err.code || String(r.status), message, data);
    if (r.status === 401) listeners.forEach((fn) => fn(e));
    throw e;
  }
  return data;
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, json, opts = {}) => request("POST", path, {...opts, json});
export const put = (path, json, opts = {}) => request("PUT", path, {...opts, json});
export const del = (path, opts) => request("DELETE", path, opts);

// A job with input images as a multipart upload: the request's fields as one JSON part
// ("request"), the pictures as files ("image", "mask"): no base64 in the browser.
export function submitJob(fields, {image = null, mask = null} = {}) {
  if (!image && !mask) return post("/api/v1/jobs", fields);
  const form = new FormData();
  form.append("request", JSON.stringify(fields));  // a text field: the server reads it as Form(str), not a file
  if (image) form.append("image", image, image.name || "image.png");
  if (mask) form.append("mask", mask, mask.name || "mask.png");
  return request("POST", "/api/v1/uploads", {form});
}

// Paths of the server's own URLs: the API answers absolute URLs built from its public
// address; the page uses them same-origin.
export function localPath(url) {
  try {
    const u = new URL(url, location.href);
    return u.pathname + u.search;
  } catch {
    return url;
  }
}

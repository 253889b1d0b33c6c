// The /v1 API with the operator's token. The token lives in this tab's session
// storage and goes only into the Authorization header: never into a URL, a log or
// the page.

const KEY = "lc-dashboard-token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forget() {
  sessionStorage.removeItem(KEY);
}

/** An error answer: its status and the problem's detail (the lc command's words). */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Called on a 401: the token is unknown, revoked or expired. */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

async function problem(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.detail) detail = body.detail;
  } catch (_) {
    // Not a problem document: the status says enough.
  }
  if (response.status === 401) onUnauthorized(detail);
  return new ApiError(response.status, detail);
}

/** Sends a request; resolves to the answer's JSON (or text), throws an ApiError. */
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the server does not answer (${err.message})`);
  }
  if (!response.ok) throw await problem(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const del = (path) => call("DELETE", path);

/** A query string of the set values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** An image's object URL for an authenticated resource (a chart). */
export async function imageUrl(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token()}` },
    cache: "no-store",
  });
  if (!response.ok) throw await problem(response);
  return URL.createObjectURL(await response.blob());
}

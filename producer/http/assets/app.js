// The dashboard: log in with a token, then one view per route (#/queues, #/workers,
// #/jobs, #/jobs/ID, #/deployments, #/deployments/NAME, #/stuck), refreshed every
// 2 s and at once on every event of /v1/events. A view is {title, mount(root, route),
// refresh()}: mount builds what stays (forms), refresh what changes.

import * as api from "./api.js";
import { follow } from "./live.js";
import { h, notice } from "./ui.js";
import queues from "./queues.js";
import workers from "./workers.js";
import { jobList, jobPage } from "./jobs.js";
import { deploymentList, deploymentPage } from "./deployments.js";
import stuck from "./stuck.js";

const POLL_MS = 2000;
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const live = document.getElementById("live");
const logout = document.getElementById("logout");

let current = null; // {view, key}
let stream = null;
let timer = null;
let pending = null;

/** The route of the location's hash: its path parts and its query. */
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search] = hash.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(search || "") };
}

function viewOf({ parts }) {
  switch (parts[0]) {
    case "workers": return workers;
    case "jobs": return parts[1] ? jobPage : jobList;
    case "deployments": return parts[1] ? deploymentPage : deploymentList;
    case "stuck": return stuck;
    default: return queues;
  }
}

/** Refreshes the view, keeping the focus on the element of the same key. */
async function refresh() {
  if (!current || !api.token()) return;
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.focusKey : undefined;
  try {
    await current.view.refresh();
  } catch (err) {
    if (err.status !== 401) notice(`Could not refresh: ${err.message}`, true);
  }
  if (focused && document.activeElement === document.body) {
    const again = main.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

/** A refresh soon (events come in bursts: one refresh for a burst). */
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 250);
}

function poll() {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    if (!document.hidden) await refresh();
    poll();
  }, POLL_MS);
}

async function show() {
  if (!api.token()) return loginForm();
  const where = route();
  const view = viewOf(where);
  for (const link of nav.querySelectorAll("a")) {
    const active = link.getAttribute("href") === `#/${where.parts[0] || "queues"}`;
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = { view };
  main.replaceChildren();
  document.title = `${view.title(where)} · LaunchControl`;
  view.mount(main, where);
  await refresh();
}

function loginForm(message) {
  current = null;
  nav.hidden = true;
  live.hidden = true;
  logout.hidden = true;
  if (stream) { stream.stop(); stream = null; }
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h("form", { class: "login", id: "login" },
    h("h1", {}, "Log in"),
    h("p", {}, "Paste an admin token (", h("code", {}, "lc tokens create --owner NAME --admin"),
      "). It stays in this browser tab only, and goes to the server only in request headers."),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("label", {}, "Token", input),
    h("button", { type: "submit", class: "primary" }, "Log in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    api.setToken(input.value.trim());
    try {
      await api.get("/v1/queues");
    } catch (err) {
      api.forget();
      return loginForm(err.status === 401 ? "That token is unknown, revoked or expired." : err.message);
    }
    start();
  });
  main.replaceChildren(form);
  input.focus();
}

function start() {
  nav.hidden = false;
  live.hidden = false;
  logout.hidden = false;
  live.dataset.mode = "polling";
  live.textContent = "polling every 2 s";
  if (!stream) {
    stream = follow(() => refreshSoon(), (mode) => {
      live.dataset.mode = mode;
      live.textContent = mode === "live" ? "live" : "polling every 2 s";
    });
  }
  poll();
  show();
}

api.whenUnauthorized((detail) => {
  api.forget();
  loginForm(`Logged out: ${detail}`);
});
logout.addEventListener("click", () => {
  api.forget();
  notice("Logged out.");
  loginForm();
});
// A new view: the focus moves to its content (as after "Skip to content").
window.addEventListener("hashchange", async () => {
  if (!api.token()) return;
  await show();
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
});
document.addEventListener("lc:refresh", refreshSoon);
document.getElementById("loading")?.remove();
if (api.token()) start();
else loginForm();

// Deployments: a grid of each deployment's machines and their containers, coloured
// by state (green: ready or running; amber: on the way; red: failed; grey: gone),
// with the time left before expiry; a deployment's page adds its warnings, history,
// jobs and the actions (teardown, extend, ack of leftovers).

import * as api from "./api.js";
import { actionButton, age, badge, fill, h, short, since, table, tone, when } from "./ui.js";

/** Most deployments whose grid the list shows (one request each). */
const MAX_GRIDS = 24;

const containerTone = (state) => (state === "running" ? "good" : tone(state));

/** Whether everything of a deployment is where it should be: the grid is green. */
function healthy(view) {
  const d = view.deployment;
  const settled = d.state === "deployed" || (d.state === "provisioned" && !d.deploy_after_provision);
  return settled && view.machines.every((m) => m.state === "ready") &&
    current(view).every((c) => c.state === "running");
}

/** The containers worth showing: this generation's, and older ones not yet removed. */
function current(view) {
  return view.containers.filter((c) => c.generation === view.deployment.generation || c.state !== "removed");
}

function expiry(deployment, expiresInSecs) {
  if (!deployment.expires_at) return "does not expire";
  const left = expiresInSecs !== undefined && expiresInSecs !== null ? expiresInSecs : -since(deployment.expires_at);
  return left > 0 ? `expires in ${age(left)}` : `expired ${age(-left)} ago`;
}

function grid(view) {
  const containers = current(view);
  const tiles = view.machines.map((machine) => h("div", {
    class: "machine", "data-tone": tone(machine.state), "data-kind": "machine", "data-state": machine.state,
    title: machine.last_error || `${machine.name}: ${machine.state}`,
  },
  h("div", { class: "name" }, machine.name),
  h("div", {}, machine.state),
  containers.filter((c) => c.machine_id === machine.id).map((c) => h("span", {
    class: "container", "data-tone": containerTone(c.state), "data-kind": "container", "data-state": c.state,
    title: c.last_error || `${c.name} (${c.image}, generation ${c.generation}): ${c.state}`,
  }, `${c.name.split("-").slice(-1)[0]} · ${c.state}`))));
  return h("div", { class: "grid", role: "list", "aria-label": `machines of ${view.deployment.name}` },
    tiles.length ? tiles : h("p", { class: "muted" }, "No machines yet."));
}

function card(view, summary) {
  const d = view.deployment;
  const ok = healthy(view);
  return h("section", { class: "card", "data-deployment": d.name, "data-healthy": ok ? "true" : "false" },
    h("h2", {}, h("a", { href: `#/deployments/${encodeURIComponent(d.name)}` }, d.name), badge(d.state)),
    h("div", { class: "muted" }, `${d.owner} · ${d.provider} · generation ${d.generation} · `,
      expiry(d, summary && summary.expires_in_secs)),
    grid(view),
    view.warnings.map((warning) => h("p", { class: "error" }, warning)));
}

let list = { region: null, all: false };

export const deploymentList = {
  title: () => "Deployments",
  mount(root) {
    list = { region: h("div"), all: false };
    const all = h("input", { type: "checkbox", id: "all-deployments" });
    all.addEventListener("change", () => { list.all = all.checked; document.dispatchEvent(new Event("lc:refresh")); });
    root.append(h("h1", {}, "Deployments"),
      h("form", { class: "filters" }, h("label", { class: "inline" }, h("span", {}, all, " torn down ones too"))),
      list.region);
  },
  async refresh() {
    const summaries = await api.get(`/v1/deployments${api.query({ all: list.all ? "true" : undefined, limit: 100 })}`);
    const shown = summaries.slice(0, MAX_GRIDS);
    const views = await Promise.all(shown.map((s) => api.get(`/v1/deployments/${s.id}?events=1`)));
    const cards = views.map((view, index) => card(view, shown[index]));
    const rest = summaries.slice(MAX_GRIDS).map((s) => [
      h("a", { href: `#/deployments/${encodeURIComponent(s.name)}` }, s.name), badge(s.state),
      [`${s.machines_ready} / ${s.node_count}`, { class: "num" }], [s.containers_running, { class: "num" }], expiry(s, s.expires_in_secs),
    ]);
    fill(list.region,
      cards.length ? h("div", { class: "cards" }, cards) : h("p", { class: "muted" }, "No deployments (lc deploy create, POST /v1/deployments)."),
      rest.length ? table(["Deployment", "State", ["Machines ready", "num"], ["Containers running", "num"], "Expiry"], rest, "") : null);
  },
};

function actions(view) {
  const d = view.deployment;
  const path = `/v1/deployments/${d.id}`;
  const buttons = [];
  if (d.state !== "torn_down") {
    buttons.push(actionButton({
      label: "Teardown", key: `teardown:${d.id}`, title: `Tear down deployment ${d.name}?`,
      text: "Its containers, then its machines, are removed. This cannot be undone.", verb: "Tear down",
      act: () => api.del(path), done: (answer) => `Deployment ${d.name}: ${answer.state.replace(/_/g, " ")}.`,
    }));
  }
  if (d.expires_at && !["tearing_down", "torn_down", "leftovers"].includes(d.state)) {
    buttons.push(actionButton({
      label: "Extend", key: `extend:${d.id}`, title: `Extend deployment ${d.name}?`,
      text: "Its expiry moves later by this long (30m, 2h, 7d).",
      fields: [{ name: "by", label: "By", value: "1h", required: true }],
      act: ({ by }) => api.post(`${path}/extend`, { by }),
      done: (answer) => `Deployment ${d.name} now expires ${new Date(answer.expires_at).toLocaleString()}.`,
    }));
  }
  if (d.state === "leftovers") {
    buttons.push(ackButton(d));
  }
  return h("div", { class: "actions" }, buttons);
}

/** Closes a leftovers deployment, with the operator's note of what they checked. */
export function ackButton(d) {
  return actionButton({
    label: "Ack", key: `ack:${d.id || d.name}`, title: `Acknowledge the leftovers of ${d.name}?`,
    text: "Only once you have deleted (or checked) its machines at the provider: they are then given up on.",
    verb: "Acknowledge",
    fields: [{ name: "note", label: "What you checked at the provider", required: true, multiline: true }],
    act: ({ note }) => api.post(`/v1/deployments/${encodeURIComponent(d.id || d.name)}/ack`, { note }),
    done: (answer) => `Deployment ${d.name}: ${answer.state.replace(/_/g, " ")}.`,
  });
}

let detail = { region: null, name: null };

export const deploymentPage = {
  title: ({ parts }) => `Deployment ${parts[1]}`,
  mount(root, { parts }) {
    detail = { region: h("div"), name: parts[1] };
    root.append(h("p", {}, h("a", { href: "#/deployments" }, "← Deployments")), detail.region);
  },
  async refresh() {
    const view = await api.get(`/v1/deployments/${encodeURIComponent(detail.name)}?events=100`);
    const d = view.deployment;
    const history = view.events.slice().reverse().map((event) => [
      when(event.at), event.subject,
      event.to_state ? h("span", {}, event.from_state || "", " → ", event.to_state) : "",
      event.message || "",
      event.job_id ? h("a", { href: `#/jobs/${event.job_id}`, class: "mono" }, short(event.job_id)) : "",
    ]);
    const jobs = view.jobs.map((job) => [
      h("a", { href: `#/jobs/${job.id}`, class: "mono" }, short(job.id)), job.kind, badge(job.state),
      [`${job.attempt} / ${job.max_attempts}`, { class: "num" }], when(job.updated_at),
      h("span", { class: "error" }, (job.last_error || "").split("\n")[0].slice(0, 120)),
    ]);
    fill(detail.region,
      card(view),
      d.last_error ? h("pre", {}, d.last_error) : null,
      actions(view),
      h("h2", {}, "History (newest first)"),
      table(["At", "Subject", "Transition", "Message", "Job"], history, "No history."),
      h("h2", {}, "Jobs"),
      table(["Job", "Kind", "State", ["Attempt", "num"], "Updated", "Last error"], jobs, "No jobs."),
      h("h2", {}, "Spec (secrets redacted)"),
      h("pre", {}, JSON.stringify(d.spec, null, 2)));
  },
};

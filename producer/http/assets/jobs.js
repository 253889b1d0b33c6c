// Jobs: a filtered list (the filters of lc jobs ls, kept in the route so a link
// keeps them) with cursor pages, and a job's page: its facts, last error, payload,
// the actions its state allows, and its whole history.

import * as api from "./api.js";
import { actionButton, badge, fill, goneAfter, h, short, table, when } from "./ui.js";

const STATES = ["", "queued", "running", "succeeded", "dead", "cancelled"];
const FILTERS = ["state", "queue", "kind", "older_than"];

let list = { region: null, filters: {}, cursors: [], cursor: null, next: null };

function filterForm(params) {
  const field = (name, label, input) => h("label", {}, label, input);
  const state = h("select", { name: "state" },
    STATES.map((value) => h("option", { value, selected: params.get("state") === value }, value || "any")));
  const text = (name, placeholder) => h("input", { name, value: params.get(name) || "", placeholder, size: 12 });
  const form = h("form", { class: "filters", id: "job-filters" },
    field("state", "State", state),
    field("queue", "Queue", text("queue", "default")),
    field("kind", "Kind", text("kind", "sleep")),
    field("older_than", "Unchanged for", text("older_than", "10m")),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const search = new URLSearchParams();
    for (const name of FILTERS) if (data.get(name)) search.set(name, data.get(name));
    location.hash = `#/jobs${search.toString() ? `?${search}` : ""}`;
  });
  return form;
}

function pager() {
  const back = h("button", { type: "button", disabled: !list.cursors.length, "data-focus-key": "newer" }, "← Newer");
  const forward = h("button", { type: "button", disabled: !list.next, "data-focus-key": "older" }, "Older →");
  back.addEventListener("click", () => { list.cursor = list.cursors.pop() || null; document.dispatchEvent(new Event("lc:refresh")); });
  forward.addEventListener("click", () => { list.cursors.push(list.cursor); list.cursor = list.next; document.dispatchEvent(new Event("lc:refresh")); });
  return h("div", { class: "actions" }, back, forward);
}

export const jobList = {
  title: () => "Jobs",
  mount(root, { params }) {
    list = { region: h("div"), filters: {}, cursors: [], cursor: null, next: null };
    for (const name of FILTERS) list.filters[name] = params.get(name) || undefined;
    root.append(h("h1", {}, "Jobs"), filterForm(params), list.region);
  },
  async refresh() {
    const page = await api.get(`/v1/jobs${api.query({ ...list.filters, limit: 50, cursor: list.cursor })}`);
    list.next = page.next;
    const rows = page.jobs.map((job) => [
      h("a", { href: `#/jobs/${job.id}`, class: "mono", "data-focus-key": `job:${job.id}` }, short(job.id)),
      job.kind,
      job.queue,
      badge(job.state),
      [`${job.attempt} / ${job.max_attempts}`, { class: "num" }],
      when(job.created_at),
      when(job.updated_at),
      h("span", { class: "error" }, (job.last_error || "").split("\n")[0].slice(0, 120)),
    ]);
    fill(list.region,
      table(["Job", "Kind", "Queue", "State", ["Attempt", "num"], "Created", "Updated", "Last error"],
        rows, "No job matches."),
      pager());
  },
};

/** The actions a job's state allows. */
export function jobActions(job) {
  const path = `/v1/jobs/${job.id}`;
  const done = (answer) => `Job ${short(answer.id)}: ${answer.was} → ${answer.state}.`;
  const buttons = [];
  if (job.state === "queued" || job.state === "running") {
    buttons.push(actionButton({
      label: "Cancel", key: `cancel:${job.id}`, title: `Cancel job ${short(job.id)}?`,
      text: "It will not run (again); a running attempt is stopped.", verb: "Cancel job",
      act: () => api.post(`${path}/cancel`), done,
    }));
  }
  if (job.state === "running") {
    buttons.push(actionButton({
      label: "Requeue", key: `requeue:${job.id}`, title: `Requeue job ${short(job.id)}?`,
      text: `Its worker looks gone: put it back in queue ${job.queue} now, for another worker to run. ` +
        `Refused while its worker heartbeats (silent for less than ${goneAfter()}).`,
      act: () => api.post(`${path}/requeue${api.query({ dead_after: goneAfter() })}`), done,
    }));
  }
  if (job.state === "dead" || job.state === "cancelled") {
    buttons.push(actionButton({
      label: "Retry", key: `retry:${job.id}`, title: `Retry job ${short(job.id)}?`,
      text: `It goes back to queue ${job.queue} with fresh attempts.`,
      act: () => api.post(`${path}/retry`), done,
    }));
  }
  return h("div", { class: "actions" }, buttons);
}

let detail = { region: null, id: null };

export const jobPage = {
  title: ({ parts }) => `Job ${short(parts[1])}`,
  mount(root, { parts }) {
    detail = { region: h("div"), id: parts[1] };
    root.append(h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), h("h1", { class: "mono" }, `Job ${detail.id}`), detail.region);
  },
  async refresh() {
    const { job, events } = await api.get(`/v1/jobs/${encodeURIComponent(detail.id)}`);
    const fact = (name, value) => [h("dt", {}, name), h("dd", {}, value)];
    const facts = h("dl", { class: "facts" },
      fact("State", h("span", { id: "job-state" }, badge(job.state))),
      fact("Kind", job.kind),
      fact("Queue", h("a", { href: `#/jobs?queue=${encodeURIComponent(job.queue)}` }, job.queue)),
      fact("Priority", job.priority),
      fact("Attempt", `${job.attempt} of ${job.max_attempts}`),
      fact("Run at", when(job.run_at)),
      fact("Worker (lease)", job.lease_owner ? h("span", { class: "mono" }, job.lease_owner) : "–"),
      fact("Created", when(job.created_at)),
      fact("Started", when(job.started_at)),
      fact("Finished", when(job.finished_at)),
      job.owner ? fact("Owner", job.owner) : null,
      job.group_id ? fact("Deployment", h("a", { href: `#/deployments/${job.group_id}` }, job.group_id)) : null,
      job.concurrency_key ? fact("Concurrency key", job.concurrency_key) : null);
    const history = events.map((event) => [
      when(event.at),
      event.to_state ? h("span", {}, event.from_state ? badge(event.from_state) : "", " → ", badge(event.to_state)) : h("span", { class: "muted" }, "log"),
      [event.attempt, { class: "num" }],
      event.worker_id ? h("span", { class: "mono", title: event.worker_id }, short(event.worker_id)) : "–",
      event.message || "",
    ]);
    fill(detail.region,
      facts,
      jobActions(job),
      h("h2", {}, "Last error"),
      job.last_error ? h("pre", { id: "last-error" }, job.last_error) : h("p", { class: "muted" }, "None."),
      h("h2", {}, "History"),
      table(["At", "Transition", ["Attempt", "num"], "Worker", "Message"], history, "No history."),
      h("h2", {}, "Payload"),
      h("pre", {}, JSON.stringify(job.payload, null, 2)));
  },
};

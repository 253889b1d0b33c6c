// Workers: live, gone (silent too long) or stopped; running jobs (handlers, and finished
// jobs whose results wait for their batched commit, so it may exceed the concurrency)
// and concurrency; heartbeat age; queues served.

import * as api from "./api.js";
import { age, badge, goneAfter, goneAfterChoice, h, short, table, when } from "./ui.js";

let region = null;

export default {
  title: () => "Workers",
  mount(root) {
    region = h("div");
    root.append(h("h1", {}, "Workers"), goneAfterChoice(), region);
  },
  async refresh() {
    const workers = await api.get(`/v1/workers${api.query({ dead_after: goneAfter() })}`);
    const rows = workers.map((worker) => [
      h("span", { class: "mono", title: worker.id }, short(worker.id)),
      `${worker.host}:${worker.pid}`,
      badge(worker.status),
      [`${worker.running_jobs}`, { class: "num" }],
      [`${worker.concurrency}`, { class: "num" }],
      [worker.status === "stopped" ? "–" : age(worker.heartbeat_age_secs), { class: "num" }],
      worker.queues.split(",").join(", "),
      when(worker.started_at),
      worker.version,
    ]);
    region.replaceChildren(table(
      ["Worker", "Host:pid", "Status", ["Running", "num"], ["Concurrency", "num"], ["Heartbeat age", "num"], "Queues", "Started", "Version"],
      rows, "No worker is running, or stopped within the last hour: start lc-worker."));
  },
};

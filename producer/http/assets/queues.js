// Queues: depth by state, the oldest due job, jobs finished in the last minute, the
// last hour's throughput and failures (server-drawn SVG charts, refreshed every 30 s;
// their totals are also text, so the view works without them), paused or not, and
// pause/resume.

import * as api from "./api.js";
import { actionButton, age, badge, h, table } from "./ui.js";

const CHART_EVERY_MS = 30000;
let region = null;
let charts = new Map(); // queue -> {url, at}

function pauseButton(queue) {
  const resume = queue.paused;
  const verb = resume ? "Resume" : "Pause";
  return actionButton({
    label: verb,
    key: `${verb}:${queue.queue}`,
    title: `${verb} queue ${queue.queue}?`,
    text: resume
      ? "Workers take its jobs again."
      : "Workers stop taking its jobs at their next heartbeat; running jobs finish.",
    act: () => api.post(`/v1/queues/${encodeURIComponent(queue.queue)}/${verb.toLowerCase()}`),
    done: (answer) => `Queue ${answer.queue} is ${answer.paused ? "paused" : "active"}.`,
  });
}

/** The chart of a queue: the last one fetched, renewed when its totals changed or it is old. */
function chart(queue, totals) {
  const img = h("img", { width: 240, height: 48, alt: totals, "data-queue": queue });
  const known = charts.get(queue);
  if (known && known.url) {
    img.src = known.url;
    img.dataset.drawn = known.drawn;
  }
  if (!known || known.totals !== totals || Date.now() - known.at > CHART_EVERY_MS) {
    charts.set(queue, { ...known, at: Date.now(), totals });
    api.imageUrl(`/v1/queues/${encodeURIComponent(queue)}/throughput.svg`).then((url) => {
      if (known && known.url) URL.revokeObjectURL(known.url);
      charts.set(queue, { url, at: Date.now(), totals, drawn: totals });
      for (const shown of document.querySelectorAll(`img[data-queue="${CSS.escape(queue)}"]`)) {
        shown.src = url;
        shown.dataset.drawn = totals;
      }
    }, () => {
      // No chart: the totals beside it still tell the story.
    });
  }
  return h("div", { class: "chart" }, img);
}

export default {
  title: () => "Queues",
  mount(root) {
    region = h("div");
    root.append(h("h1", {}, "Queues"), region);
  },
  async refresh() {
    const [queues, series] = await Promise.all([
      api.get("/v1/queues"),
      api.get("/v1/queues/throughput").catch(() => []),
    ]);
    const byQueue = new Map(series.map((row) => [row.queue, row]));
    const sum = (values) => (values || []).reduce((a, b) => a + b, 0);
    const rows = queues.map((queue) => {
      const row = byQueue.get(queue.queue);
      const ok = sum(row && row.succeeded);
      const dead = sum(row && row.dead);
      const totals = `${ok} succeeded, ${dead} dead in the last hour`;
      return [
        h("a", { href: `#/jobs?queue=${encodeURIComponent(queue.queue)}` }, queue.queue),
        badge(queue.paused ? "paused" : "active"),
        [queue.queued, { class: "num" }],
        [queue.running, { class: "num" }],
        [queue.dead, { class: "num" }],
        [queue.oldest_due_secs === null ? "–" : age(queue.oldest_due_secs), { class: "num" }],
        [queue.finished_last_minute, { class: "num" }],
        h("div", {}, chart(queue.queue, totals), h("span", { class: "muted", "data-totals": queue.queue }, totals)),
        pauseButton(queue),
      ];
    });
    region.replaceChildren(table(
      ["Queue", "State", ["Queued", "num"], ["Running", "num"], ["Dead", "num"], ["Oldest due", "num"],
        ["Done last min", "num"], "Last hour: succeeded ▲ / dead ▼ per minute", "Action"],
      rows, "No queues yet: enqueue a job (lc enqueue, POST /v1/jobs) or start a worker."));
  },
};

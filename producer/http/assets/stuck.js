// What needs an operator (GET /v1/stuck, as lc stuck): each finding with its reason
// and its fix; every lc command of the fix that the API can do is a button (cancel,
// retry, requeue, resume, teardown, ack), each asking for confirmation. Then the
// dead jobs, each with Retry.

import * as api from "./api.js";
import { ackButton } from "./deployments.js";
import { jobActions } from "./jobs.js";
import { actionButton, age, badge, fill, goneAfter, goneAfterChoice, h, short, table, when } from "./ui.js";

let region = null;

/** The buttons for the lc commands of a fix; other steps stay text. */
function fixButtons(finding) {
  const fix = finding.fix;
  const buttons = [];
  const job = fix.match(/lc jobs (cancel|retry|requeue) ([0-9a-f-]{36})/g) || [];
  for (const command of job) {
    const [, action, id] = command.split(" ").slice(1);
    const label = action[0].toUpperCase() + action.slice(1);
    const extra = action === "requeue" ? api.query({ dead_after: goneAfter() }) : "";
    buttons.push(actionButton({
      label, key: `${action}:${id}`, title: `${label} job ${short(id)}?`,
      text: `${finding.reason}. This runs: ${command}.`,
      act: () => api.post(`/v1/jobs/${id}/${action}${extra}`),
      done: (answer) => `Job ${short(answer.id)}: ${answer.was} → ${answer.state}.`,
    }));
  }
  const resume = fix.match(/lc queues resume ([a-z0-9_-]+)/);
  if (resume) {
    buttons.push(actionButton({
      label: "Resume", key: `resume:${resume[1]}`, title: `Resume queue ${resume[1]}?`,
      text: "Workers take its jobs again.",
      act: () => api.post(`/v1/queues/${encodeURIComponent(resume[1])}/resume`),
      done: (answer) => `Queue ${answer.queue} is active.`,
    }));
  }
  const teardown = fix.match(/lc deploy teardown (\S+)/);
  if (teardown) {
    buttons.push(actionButton({
      label: "Teardown", key: `teardown:${teardown[1]}`, title: `Tear down deployment ${teardown[1]}?`,
      text: `${finding.reason}. A new teardown job removes its containers, then its machines.`, verb: "Tear down",
      act: () => api.del(`/v1/deployments/${encodeURIComponent(teardown[1])}`),
      done: (answer) => `Deployment ${teardown[1]}: ${answer.state.replace(/_/g, " ")}.`,
    }));
  }
  const ack = fix.match(/lc deploy ack (\S+)/);
  if (ack) buttons.push(ackButton({ name: ack[1] }));
  return h("div", { class: "actions" }, buttons);
}

function subject(finding) {
  if (finding.job_id) {
    return h("a", { href: `#/jobs/${finding.job_id}`, class: "mono", "data-job": finding.job_id }, `job ${short(finding.job_id)}`);
  }
  if (finding.kind === "deployment") {
    return h("a", { href: `#/deployments/${encodeURIComponent(finding.queue)}` }, `deployment ${finding.queue}`);
  }
  return `queue ${finding.queue}`;
}

export default {
  title: () => "Stuck",
  mount(root) {
    region = h("div");
    root.append(h("h1", {}, "Stuck"), goneAfterChoice(), region);
  },
  async refresh() {
    const [findings, dead] = await Promise.all([
      api.get(`/v1/stuck${api.query({ dead_after: goneAfter() })}`),
      api.get("/v1/jobs?state=dead&limit=20"),
    ]);
    const rows = findings.map((finding) => [
      subject(finding),
      finding.job_id ? `${finding.kind} in ${finding.queue}` : "",
      badge(finding.state),
      [age(finding.since_secs), { class: "num" }],
      finding.reason,
      h("div", {}, h("code", {}, finding.fix), fixButtons(finding)),
    ]);
    const deadRows = dead.jobs.map((job) => [
      h("a", { href: `#/jobs/${job.id}`, class: "mono" }, short(job.id)), job.kind, job.queue,
      when(job.finished_at), h("span", { class: "error" }, (job.last_error || "").split("\n")[0].slice(0, 160)),
      jobActions(job),
    ]);
    fill(region,
      table(["What", "Kind", "State", ["For", "num"], "Why", "Fix"], rows, "Nothing is stuck."),
      h("h2", {}, "Dead jobs (newest 20)"),
      table(["Job", "Kind", "Queue", "Died", "Last error", "Action"], deadRows, "No dead jobs."));
  },
};

// The BullMQ side of `lc-bench --compare bullmq`: the same workloads lc-bench runs on
// LaunchControl, measured the same way, each printing one `PEER_JSON {...}` line.
//
//   node peer.mjs enqueue --jobs 20000 --producers 32
//   node peer.mjs bulk    --jobs 20000 --batch 1000 --concurrency 1,2,4
//   node peer.mjs drain   --jobs 100000 --workers 2 --concurrency 50
//   node peer.mjs latency --rate 500 --seconds 10 --warmup-seconds 1 --workers 2 --concurrency 50
//
// Every command also takes --redis URL (default redis://127.0.0.1:6379), --prefix P (the
// Redis key prefix; default "bullmq") and --bullmq-dir D (where package.json of the
// pinned install is; default this directory). Workers are child processes of this one
// (`peer.mjs worker`, started by drain and latency), like lc-worker processes.
//
// Measured as lc-bench measures lc: enqueue rates are jobs / wall time of all producers;
// a drain is timed from the first job's start (the processor's first line, in whichever
// worker was first) to the last job's finish time, and also from spawning the worker
// processes (start-up included);
// latency runs from the producer's clock just before `queue.add` to the processor's first
// line, on CLOCK_MONOTONIC (process.hrtime), which every process on the host shares.
// Every job is checked to end completed.
import { createRequire } from 'node:module';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`);
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) throw new Error(`${arg} needs a value`);
    options[arg.slice(2)] = value;
    i++;
  }
  return options;
}

const [command, ...rest] = process.argv.slice(2);
const options = parseArgs(rest);
const number = (name, fallback) => {
  const value = options[name] === undefined ? fallback : Number(options[name]);
  if (!Number.isFinite(value) || value < 0) throw new Error(`--${name} must be a number`);
  return value;
};
const numbers = (name, fallback) =>
  String(options[name] ?? fallback)
    .split(',')
    .map((part) => {
      const value = Number(part);
      if (!Number.isInteger(value) || value < 1) throw new Error(`--${name}: ${part} is not a count`);
      return value;
    });

const requireFromInstall = createRequire(path.join(options['bullmq-dir'] ?? here, 'package.json'));
const { Queue, Worker } = requireFromInstall('bullmq');
const bullmqVersion = requireFromInstall('bullmq/package.json').version;
const ioredisVersion = requireFromInstall('ioredis/package.json').version;

const redisUrl = new URL(options.redis ?? 'redis://127.0.0.1:6379');
const connection = {
  host: redisUrl.hostname,
  port: Number(redisUrl.port || 6379),
  db: Number(redisUrl.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const prefix = options.prefix ?? 'bullmq';

const monotonicMicros = () => Number(process.hrtime.bigint() / 1000n);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round = (value, places) => Math.round(value * 10 ** places) / 10 ** places;

// The same ranks as lc-bench's percentiles(): nearest rank, ceil(q * n).
function percentiles(values) {
  if (values.length === 0) return { n: 0, p50: null, p99: null, max: null };
  values.sort((a, b) => a - b);
  const at = (q) => round(values[Math.min(Math.max(Math.ceil(q * values.length), 1), values.length) - 1], 2);
  return {
    n: values.length,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: round(values[values.length - 1], 2),
    mean: round(values.reduce((sum, value) => sum + value, 0) / values.length, 2),
  };
}

function report(result) {
  process.stdout.write(
    `PEER_JSON ${JSON.stringify({ peer: 'bullmq', bullmq: bullmqVersion, ioredis: ioredisVersion, ...result })}\n`,
  );
}

function openQueue(name) {
  return new Queue(name, { connection, prefix });
}

async function verifyCompleted(queue, expected) {
  const counts = await queue.getJobCounts('completed', 'failed', 'waiting', 'active', 'delayed');
  if (counts.completed !== expected || counts.failed !== 0) {
    throw new Error(`queue ${queue.name}: ${JSON.stringify(counts)}, expected ${expected} completed`);
  }
  return counts.completed;
}

async function enqueue() {
  const jobs = number('jobs', 20000);
  const producers = number('producers', 32);
  const queue = openQueue(options.queue ?? `enqueue-c${producers}`);
  await queue.waitUntilReady();
  let next = 0;
  const calls = [];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: producers }, async () => {
      while (next++ < jobs) {
        const call = performance.now();
        await queue.add('noop', {});
        calls.push(performance.now() - call);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const waiting = await queue.getWaitingCount();
  if (waiting !== jobs) throw new Error(`enqueued ${jobs}, ${waiting} waiting`);
  await queue.obliterate({ force: true });
  await queue.close();
  report({ workload: 'enqueue', producers, jobs, seconds: round(seconds, 3), jobs_per_s: Math.round(jobs / seconds), call_ms: percentiles(calls) });
}

async function bulk() {
  const jobs = number('jobs', 20000);
  const batch = number('batch', 1000);
  const runs = [];
  for (const concurrency of numbers('concurrency', '1,2,4')) {
    const queue = openQueue(`bulk-c${concurrency}`);
    await queue.waitUntilReady();
    // Built before the clock starts, as lc-bench builds its batches.
    const batches = [];
    for (let done = 0; done < jobs; done += batch) {
      batches.push(Array.from({ length: Math.min(batch, jobs - done) }, () => ({ name: 'noop', data: {} })));
    }
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < batches.length) await queue.addBulk(batches[next++]);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const waiting = await queue.getWaitingCount();
    if (waiting !== jobs) throw new Error(`enqueued ${jobs}, ${waiting} waiting`);
    await queue.obliterate({ force: true });
    await queue.close();
    runs.push({ concurrency, batch, jobs, seconds: round(seconds, 3), jobs_per_s: Math.round(jobs / seconds) });
  }
  const best = runs.reduce((a, b) => (b.jobs_per_s > a.jobs_per_s ? b : a));
  report({ workload: 'bulk', jobs_per_s: best.jobs_per_s, concurrency: best.concurrency, runs });
}

// Starts `count` worker processes on `queueName`; resolves once each is connected.
async function startWorkers(queueName, count, concurrency) {
  const workers = [];
  for (let index = 0; index < count; index++) {
    const child = fork(
      fileURLToPath(import.meta.url),
      ['worker', '--queue', queueName, '--concurrency', String(concurrency), '--redis', redisUrl.href, '--prefix', prefix, '--bullmq-dir', options['bullmq-dir'] ?? here],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    );
    const ready = new Promise((resolve, reject) => {
      child.once('message', (message) => (message.ready ? resolve() : reject(new Error(String(message.error)))));
      child.once('exit', (code) => reject(new Error(`worker exited with ${code} before it was ready`)));
    });
    workers.push({ child, ready });
  }
  return workers;
}

// Asks each worker to close (finishing what it runs) and collects what it measured.
async function stopWorkers(workers) {
  const results = await Promise.all(
    workers.map(
      ({ child }) =>
        new Promise((resolve, reject) => {
          child.on('message', (message) => {
            if (message.closed) resolve(message);
          });
          child.once('exit', (code) => (code === 0 ? null : reject(new Error(`worker exited with ${code}`))));
          child.send({ close: true });
        }),
    ),
  );
  await Promise.all(workers.map(({ child }) => (child.exitCode === null ? new Promise((resolve) => child.once('exit', resolve)) : null)));
  return results;
}

async function drain() {
  const jobs = number('jobs', 100000);
  const count = number('workers', 1);
  const concurrency = number('concurrency', 50);
  const queue = openQueue(`drain-${count}`);
  await queue.waitUntilReady();
  await queue.obliterate({ force: true });
  for (let done = 0; done < jobs; done += 1000) {
    await queue.addBulk(Array.from({ length: Math.min(1000, jobs - done) }, () => ({ name: 'noop', data: {} })));
  }
  const spawnedAt = Date.now();
  const workers = await startWorkers(queue.name, count, concurrency);
  const readyAt = await Promise.all(workers.map(({ ready }) => ready.then(() => Date.now())));
  const timeout = 30000 + jobs * 2;
  for (;;) {
    const counts = await queue.getJobCounts('completed', 'failed');
    if (counts.completed + counts.failed >= jobs) break;
    if (Date.now() - spawnedAt > timeout) throw new Error(`drain: ${JSON.stringify(counts)} after ${timeout} ms`);
    await sleep(50);
  }
  const [newest] = await queue.getJobs(['completed'], 0, 0, false);
  const results = await stopWorkers(workers);
  const verified = await verifyCompleted(queue, jobs);
  // The first processor start of any worker: the same clock as finishedOn (Date.now()).
  const firstStarts = results.map((result) => result.firstStartedAt).filter((at) => at !== undefined);
  if (firstStarts.length === 0) throw new Error('drain: no worker reported a first job start');
  const firstStart = Math.min(...firstStarts);
  const firstToLast = (newest.finishedOn - firstStart) / 1000;
  const spawnToLast = (newest.finishedOn - spawnedAt) / 1000;
  await queue.obliterate({ force: true });
  await queue.close();
  report({
    workload: 'drain',
    workers: count,
    concurrency_per_worker: concurrency,
    jobs,
    jobs_per_s: Math.round(jobs / firstToLast),
    measured_as: 'jobs_per_s from the first processor start to the last finishedOn; jobs_per_s_from_spawn from the fork of the worker processes',
    first_start_to_last_finish_s: round(firstToLast, 3),
    jobs_per_s_from_spawn: Math.round(jobs / spawnToLast),
    spawn_to_last_finish_s: round(spawnToLast, 3),
    startup_s: round((firstStart - spawnedAt) / 1000, 3),
    workers_ready_s: round((Math.max(...readyAt) - spawnedAt) / 1000, 3),
    verified_completed: verified,
  });
}

async function latency() {
  const rate = number('rate', 500);
  const seconds = number('seconds', 10);
  // Warm-up jobs first, at the same rate: run and checked, not measured (as lc-bench).
  const warmup = Math.round(rate * number('warmup-seconds', 0));
  const count = number('workers', 2);
  const concurrency = number('concurrency', 50);
  const total = Math.round(rate * seconds);
  const queue = openQueue(`latency-${rate}`);
  await queue.waitUntilReady();
  await queue.obliterate({ force: true });
  const workers = await startWorkers(queue.name, count, concurrency);
  await Promise.all(workers.map(({ ready }) => ready));
  await sleep(500);
  // Paced like lc-bench's tokio interval with burst catch-up: job i is due at i / rate.
  const started = performance.now();
  const adds = [];
  const calls = [];
  let lateTicks = 0;
  for (let index = 0; index < warmup + total; ) {
    const now = performance.now();
    const due = started + (index * 1000) / rate;
    if (now < due) {
      await sleep(Math.max(0, due - now - 0.3));
      continue;
    }
    if (now - due > 2) lateTicks++;
    const calledAt = monotonicMicros();
    const call = performance.now();
    const measured = index >= warmup;
    adds.push(
      queue
        .add('noop', measured ? { calledAt } : { warmup: true })
        .then(() => measured && calls.push(performance.now() - call)),
    );
    index++;
  }
  const scheduleSeconds = (performance.now() - started) / 1000;
  await Promise.all(adds);
  const waitUntil = Date.now() + 60000;
  while ((await queue.getCompletedCount()) < warmup + total) {
    if (Date.now() > waitUntil) throw new Error('latency: jobs left after 60 s');
    await sleep(50);
  }
  const results = await stopWorkers(workers);
  const verified = await verifyCompleted(queue, warmup + total);
  const toStart = results.flatMap((result) => result.toStartMs);
  if (toStart.length !== total) throw new Error(`latency: ${toStart.length} handler starts for ${total} jobs`);
  await queue.obliterate({ force: true });
  await queue.close();
  report({
    workload: 'latency',
    rate_per_s: rate,
    jobs: total,
    warmup_jobs_not_measured: warmup,
    achieved_rate_per_s: round((warmup + total) / scheduleSeconds, 1),
    ticks_late_over_2ms: lateTicks,
    workers: count,
    concurrency_per_worker: concurrency,
    enqueue_call_to_handler_start_ms: percentiles(toStart),
    enqueue_call_ms: percentiles(calls),
    verified_completed: verified,
  });
}

// A worker process: a no-op processor; records when its first job started (wall clock,
// as BullMQ's processedOn and finishedOn) and, with job.data.calledAt, the time from the
// producer's call to this processor's first line.
async function worker() {
  const toStartMs = [];
  let firstStartedAt;
  const instance = new Worker(
    options.queue,
    async (job) => {
      const startedAt = monotonicMicros();
      firstStartedAt ??= Date.now();
      if (job.data.calledAt !== undefined) toStartMs.push((startedAt - job.data.calledAt) / 1000);
    },
    { connection, prefix, concurrency: number('concurrency', 50) },
  );
  instance.on('error', (err) => console.error(`bullmq worker: ${err}`));
  process.on('message', async (message) => {
    if (!message.close) return;
    await instance.close();
    process.send({ closed: true, toStartMs, firstStartedAt }, () => process.exit(0));
  });
  await instance.waitUntilReady();
  process.send({ ready: true });
}

const commands = { enqueue, bulk, drain, latency, worker };
if (!commands[command]) {
  console.error(`usage: node peer.mjs {${Object.keys(commands).join('|')}} [--option value ...]`);
  process.exit(2);
}
commands[command]().then(
  () => {
    if (command !== 'worker') process.exit(0);
  },
  (err) => {
    console.error(`peer.mjs ${command}: ${err.stack ?? err}`);
    process.exit(1);
  },
);

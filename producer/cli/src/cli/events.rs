//! `lc events tail`: follows the event stream (`<prefix>:{events}`, see the README's
//! "Events") through the read API (`lc_producer::events`); this module only prints.

use std::time::Duration;

use clap::{Args, Subcommand};
use lc_deployment::Deployments;
use lc_producer::{EventsFrom, StreamEvent};
use lc_shared::events::Event;

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Follow the event stream: print each event as it arrives (ctrl-c stops)
    ///
    /// Events are job and deployment state changes, added to the stream after they
    /// commit. This is a look for people; a service that must see every event reads the
    /// stream with a consumer group of its own.
    #[command(
        after_help = "Examples:\n  lc events tail\n  lc events tail --deployment demo --json\n  lc events tail --from-start --count 10"
    )]
    Tail(TailArgs),
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Only this deployment's events (name or id): its own, its machines' and
    /// containers', and its jobs'
    #[arg(long)]
    pub deployment: Option<String>,
    /// Print each event as its JSON, one per line, as it is on the stream
    #[arg(long)]
    pub json: bool,
    /// Start at the oldest event the stream keeps instead of the next new one
    #[arg(long)]
    pub from_start: bool,
    /// Exit after printing this many events
    #[arg(long)]
    pub count: Option<usize>,
}

pub async fn run(deployments: &Deployments, command: EventsCommand) -> anyhow::Result<i32> {
    match command {
        EventsCommand::Tail(args) => tail(deployments, args).await,
    }
}

async fn tail(deployments: &Deployments, args: TailArgs) -> anyhow::Result<i32> {
    let group = match &args.deployment {
        Some(name) => Some(deployments.resolve(name).await?),
        None => None,
    };
    let from = if args.from_start {
        EventsFrom::Start
    } else {
        EventsFrom::Now
    };
    let mut reader = deployments
        .producer()
        .inspector()
        .events(from, group)
        .await?;
    let mut printed = 0;
    loop {
        if args.count.is_some_and(|count| printed >= count) {
            return Ok(0);
        }
        for entry in reader.next(Duration::from_secs(5)).await? {
            if args.count.is_some_and(|count| printed >= count) {
                break;
            }
            println!("{}", line(&entry, args.json));
            printed += 1;
        }
    }
}

/// One event as a line: its JSON, or time, type, subject, change and message.
fn line(entry: &StreamEvent, json: bool) -> String {
    match (&entry.event, json) {
        (_, true) => entry.raw.clone(),
        (None, false) => format!(
            "{}  (not an event of wire version 1) {}",
            entry.entry_id, entry.raw
        ),
        (Some(event), false) => {
            let change = match &event.from {
                Some(from) => format!("{from} -> {}", event.to),
                None => format!("-> {}", event.to),
            };
            let mut text = format!(
                "{}  {}  {}  {change}",
                event.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                event.kind,
                subject(event)
            );
            if let Some(message) = &event.message {
                text.push_str("  ");
                text.push_str(message);
            }
            text
        }
    }
}

/// What an event is about, in a few words: `job ID (kind)`, `demo machine demo-1`.
fn subject(event: &Event) -> String {
    if let Some(job) = event.job() {
        return match job.kind {
            Some(kind) => format!("job {} ({kind}, attempt {})", job.id, job.attempt),
            None => format!("job {}", job.id),
        };
    }
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    let deployment = event
        .detail
        .get("deployment")
        .map(|deployment| text(&deployment["name"]))
        .unwrap_or_default();
    match event.detail.get("subject") {
        Some(subject) if subject["kind"] == "deployment" => format!("deployment {deployment}"),
        Some(subject) => format!(
            "{deployment} {} {}",
            text(&subject["kind"]),
            text(&subject["name"])
        ),
        None => event.group_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

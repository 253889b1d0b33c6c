//! Reading the event stream (the read side of `lc_shared::events`): what `lc events
//! tail` prints, for any Rust reader. A reader follows the stream from its oldest kept
//! entry or from now on, optionally only the events of one group (a deployment's own
//! changes and its jobs' carry the deployment's id as `group_id`). Consumers that must
//! not miss an event use a consumer group of their own instead (see the README).

use std::time::Duration;

use lc_shared::events::Event;
use lc_shared::queue::{HintPopper, Hints};
use uuid::Uuid;

use crate::{Inspector, ProducerError, Result};

/// Where a reader starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsFrom {
    /// The oldest event the stream keeps.
    Start,
    /// The next event added.
    Now,
    /// The entry after this stream entry id (`<ms>-<seq>`, as a reader returned it):
    /// how an SSE client resumes with `Last-Event-ID`.
    After(String),
}

/// Whether `id` has the shape of a stream entry id (`<ms>-<seq>`, or `<ms>`).
pub fn is_entry_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let digits = |part: &str| {
        !part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit())
    };
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

/// One entry of the stream.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    /// The stream entry id.
    pub entry_id: String,
    /// The entry's JSON as it is on the stream.
    pub raw: String,
    /// The JSON read as an event; `None` when it is not one this reader understands.
    pub event: Option<Event>,
}

/// Follows the event stream; see [`Inspector::events`].
pub struct EventReader {
    hints: Hints,
    popper: HintPopper,
    after: String,
    group_id: Option<Uuid>,
}

/// Most entries one read returns.
const READ_COUNT: usize = 500;

impl Inspector {
    /// A reader of the event stream from `from`, of the events of `group_id` only
    /// when given.
    pub async fn events(&self, from: EventsFrom, group_id: Option<Uuid>) -> Result<EventReader> {
        let hints = self.hints.clone().ok_or(ProducerError::NoRedis)?;
        let after = match from {
            EventsFrom::Start => "0".to_owned(),
            EventsFrom::After(id) if is_entry_id(&id) => id,
            EventsFrom::After(id) => {
                return Err(ProducerError::InvalidEventId(id));
            }
            // The newest entry's id rather than `$`: the next read starts right after it,
            // so nothing added between two reads is missed.
            EventsFrom::Now => hints
                .last_event_id()
                .await?
                .unwrap_or_else(|| "0".to_owned()),
        };
        let popper = hints.popper().await?;
        Ok(EventReader {
            hints,
            popper,
            after,
            group_id,
        })
    }
}

impl EventReader {
    /// The next events, oldest first, waiting up to `wait` for one (an empty answer
    /// means none came). Entries of other groups are skipped when the reader has one.
    pub async fn next(&mut self, wait: Duration) -> Result<Vec<StreamEvent>> {
        let entries = self
            .hints
            .read_events(&mut self.popper, &self.after, READ_COUNT, Some(wait))
            .await?;
        if let Some((last, _)) = entries.last() {
            self.after = last.clone();
        }
        Ok(entries
            .into_iter()
            .map(|(entry_id, raw)| StreamEvent {
                event: serde_json::from_str(&raw).ok(),
                entry_id,
                raw,
            })
            .filter(|entry| match self.group_id {
                None => true,
                Some(group) => entry
                    .event
                    .as_ref()
                    .is_some_and(|event| event.group_id == Some(group)),
            })
            .collect())
    }
}

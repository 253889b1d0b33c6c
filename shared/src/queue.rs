//! Redis: dispatch hints, per-queue markers, and the inbox stream.
//!
//! A hint is a job id in one of a queue's three ready lists (one per priority). Hints
//! are only a fast path: a lost hint leaves its job `queued` in the database, where an
//! idle worker or the sweeper finds it, and a duplicate or stale hint claims nothing.
//! Every key of a queue carries the queue name as a hash tag (`lc:{queue}:...`) so that
//! a Redis Cluster keeps a queue on one shard.
//!
//! The inbox is a stream that services in any language write jobs to (see the README
//! for the wire format). It is consumed with a consumer group, because there a message
//! is not in the database yet: an entry is acknowledged only after its job committed
//! (or after it was dead-lettered with its reason).
//!
//! The event stream (`lc:{events}`) carries events for upstream services, written by
//! the event relay after the changes committed (see [`crate::events`]); consumers
//! follow it with consumer groups of their own.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Value};

use crate::job::Priority;
use crate::store::HintTarget;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
}

pub type Result<T = ()> = std::result::Result<T, QueueError>;

/// The consumer group that ingests the inbox stream.
pub const INBOX_GROUP: &str = "ingest";
/// How many dead letters the inbox keeps (the oldest go first).
pub const DEAD_LETTER_MAX: usize = 100_000;

/// One message read from the inbox stream.
#[derive(Clone, Debug)]
pub struct InboxMessage {
    /// The stream entry id, unique per message: ingesting twice makes one job.
    pub entry_id: String,
    /// The `job` field: the JSON the producer wrote, if there was one.
    pub body: Option<String>,
    /// Every field as text, kept for the dead-letter record.
    pub fields: Vec<(String, String)>,
}

/// A dead-lettered inbox message.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub original_id: String,
    pub reason: String,
    pub body: String,
}

/// URL scheme that selects Redis Cluster: `redis+cluster://host:port[,host:port...]`
/// lists seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A connection to one Redis server or to a Redis Cluster; commands are the same
/// because every key of a queue shares a hash tag (one slot).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What opens new connections (dedicated blocking ones, for poppers).
#[derive(Clone)]
enum Opener {
    Single(redis::Client),
    Cluster(Vec<String>),
}

/// The Redis client: dispatch hints, queue markers and the inbox stream, with this
/// installation's key prefix. (Named for what it carries: "queue" is a named job
/// queue.) Cheap to clone; a single-server connection reconnects by itself after
/// Redis restarts.
#[derive(Clone)]
pub struct Hints {
    opener: Opener,
    conn: Conn,
    prefix: String,
}

impl Hints {
    /// Connects lazily: a Redis that is down now is not an error (the database path
    /// keeps jobs moving); commands fail until it is back, then work again.
    ///
    /// `redis+cluster://host:port,host:port` connects to a Redis Cluster through those
    /// seed nodes instead (eagerly: the cluster must answer at start).
    pub async fn connect(url: &str, prefix: &str) -> Result<Hints> {
        if let Some(nodes) = url.strip_prefix(CLUSTER_SCHEME) {
            let nodes: Vec<String> = nodes
                .split(',')
                .filter(|node| !node.is_empty())
                .map(|node| format!("redis://{node}"))
                .collect();
            let conn = cluster_connection(&nodes, Duration::from_secs(5)).await?;
            return Ok(Hints {
                opener: Opener::Cluster(nodes),
                conn: Conn::Cluster(conn),
                prefix: prefix.to_owned(),
            });
        }
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Hints {
            opener: Opener::Single(client),
            conn: Conn::Single(conn),
            prefix: prefix.to_owned(),
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The ready list of one priority of a queue.
    pub fn ready_key(&self, queue: &str, priority: Priority) -> String {
        format!("{}:{{{queue}}}:ready:{}", self.prefix, priority.as_str())
    }

    /// A queue's three ready lists, highest priority first.
    pub fn ready_keys(&self, queue: &str) -> [String; 3] {
        Priority::ALL.map(|priority| self.ready_key(queue, priority))
    }

    /// Present while this Redis has every hint of the queue; a Redis that lost its
    /// data lacks it, which tells the sweeper to rebuild the queue from the database.
    pub fn marker_key(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:marker", self.prefix)
    }

    pub fn inbox_key(&self) -> String {
        format!("{}:{{inbox}}", self.prefix)
    }

    pub fn dead_letter_key(&self) -> String {
        format!("{}:{{inbox}}:dead", self.prefix)
    }

    /// Sends hints, grouped per list, in one pipelined round trip.
    pub async fn push_hints(&self, targets: &[HintTarget]) -> Result {
        if targets.is_empty() {
            return Ok(());
        }
        // One pipeline per queue: its keys share a slot, so a cluster can run it.
        let mut per_queue: HashMap<&str, HashMap<String, Vec<String>>> = HashMap::new();
        for target in targets {
            per_queue
                .entry(target.queue.as_str())
                .or_default()
                .entry(self.ready_key(&target.queue, target.priority))
                .or_default()
                .push(target.id.to_string());
        }
        let sends = per_queue.into_values().map(|lists| {
            let mut pipe = redis::pipe();
            for (key, ids) in &lists {
                pipe.lpush(key, ids).ignore();
            }
            let mut conn = self.conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        });
        futures_util::future::try_join_all(sends).await?;
        Ok(())
    }

    /// Puts popped hints back at the consuming end of their list (a worker that popped
    /// them is shutting down before claiming).
    pub async fn return_hints(&self, key: &str, ids: &[String]) -> Result {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        conn.rpush::<_, _, ()>(key, ids).await?;
        Ok(())
    }

    /// A dedicated connection for blocking pops, which must not share a multiplexed
    /// connection with other commands (they would wait behind the block).
    pub async fn popper(&self) -> Result<HintPopper> {
        let conn = match &self.opener {
            Opener::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(None);
                PopperConn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            // Blocking calls wait at most a few seconds; the timeout only has to be longer.
            Opener::Cluster(nodes) => {
                PopperConn::Cluster(cluster_connection(nodes, Duration::from_secs(60)).await?)
            }
        };
        Ok(HintPopper { conn })
    }

    pub async fn has_marker(&self, queue: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.marker_key(queue)).await?)
    }

    pub async fn set_marker(&self, queue: &str) -> Result {
        let mut conn = self.conn.clone();
        let now = chrono::Utc::now().to_rfc3339();
        conn.set::<_, _, ()>(self.marker_key(queue), now).await?;
        Ok(())
    }

    /// Hints waiting in a queue's lists (all priorities).
    pub async fn ready_len(&self, queue: &str) -> Result<i64> {
        let mut pipe = redis::pipe();
        for key in self.ready_keys(queue) {
            pipe.llen(key);
        }
        let mut conn = self.conn.clone();
        let lens: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(lens.iter().sum())
    }

    pub async fn ping(&self) -> Result {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
    }

    // ---- inbox stream ----

    /// Writes a message the way a service in another language would (tests, `lc`).
    pub async fn add_inbox(&self, body: &str) -> Result<String> {
        let mut conn = self.conn.clone();
        Ok(conn.xadd(self.inbox_key(), "*", &[("job", body)]).await?)
    }

    /// Creates the consumer group (from the stream's start) unless it exists.
    pub async fn ensure_inbox_group(&self) -> Result {
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<()> = conn
            .xgroup_create_mkstream(self.inbox_key(), INBOX_GROUP, "0")
            .await;
        match created {
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Reads new inbox messages for `consumer`, blocking up to `block`. Uses the
    /// caller's dedicated connection.
    pub async fn read_inbox(
        &self,
        popper: &mut HintPopper,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<InboxMessage>> {
        let options = StreamReadOptions::default()
            .group(INBOX_GROUP, consumer)
            .count(count)
            .block(block.as_millis() as usize);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg(&options)
            .arg("STREAMS")
            .arg(self.inbox_key())
            .arg(">");
        let reply: redis::RedisResult<Option<StreamReadReply>> = popper.query(&cmd).await;
        let reply = match reply {
            Err(err) if err.code() == Some("NOGROUP") => {
                // Redis lost the group (restart, flush): make it again and read next time.
                self.ensure_inbox_group().await?;
                return Ok(Vec::new());
            }
            other => other?,
        };
        Ok(reply
            .map(|reply| {
                reply
                    .keys
                    .into_iter()
                    .flat_map(|key| key.ids)
                    .map(inbox_message)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Reads again the messages `consumer` itself read but has not acknowledged (its
    /// pending entries, XREADGROUP with id 0), oldest first, without blocking.
    pub async fn read_own_pending(
        &self,
        popper: &mut HintPopper,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<InboxMessage>> {
        let options = StreamReadOptions::default()
            .group(INBOX_GROUP, consumer)
            .count(count);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg(&options)
            .arg("STREAMS")
            .arg(self.inbox_key())
            .arg("0");
        let reply: redis::RedisResult<Option<StreamReadReply>> = popper.query(&cmd).await;
        let reply = match reply {
            // The group is gone (Redis restarted or was flushed), and with it the
            // pending entries: nothing left to read again.
            Err(err) if err.code() == Some("NOGROUP") => return Ok(Vec::new()),
            other => other?,
        };
        Ok(reply
            .map(|reply| {
                reply
                    .keys
                    .into_iter()
                    .flat_map(|key| key.ids)
                    // A pending entry deleted since (acknowledged by a takeover) comes
                    // back with no fields; there is nothing to ingest.
                    .filter(|entry| !entry.map.is_empty())
                    .map(inbox_message)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Takes over messages another consumer read but never acknowledged (it died)
    /// once they have been idle for `min_idle`.
    pub async fn reclaim_inbox(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<InboxMessage>> {
        let mut conn = self.conn.clone();
        let reply: redis::RedisResult<redis::streams::StreamAutoClaimReply> = conn
            .xautoclaim_options(
                self.inbox_key(),
                INBOX_GROUP,
                consumer,
                min_idle.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await;
        match reply {
            Err(err) if err.code() == Some("NOGROUP") => {
                self.ensure_inbox_group().await?;
                Ok(Vec::new())
            }
            other => Ok(other?.claimed.into_iter().map(inbox_message).collect()),
        }
    }

    /// Acknowledges and deletes handled messages.
    pub async fn ack_inbox(&self, entry_ids: &[String]) -> Result {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let key = self.inbox_key();
        let mut pipe = redis::pipe();
        pipe.xack(&key, INBOX_GROUP, entry_ids).ignore();
        pipe.xdel(&key, entry_ids).ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Keeps a refused message with its reason where operators can list it.
    pub async fn dead_letter(&self, message: &InboxMessage, reason: &str) -> Result {
        let body = message
            .body
            .clone()
            .unwrap_or_else(|| serde_json::to_string(&message.fields).unwrap_or_default());
        let mut conn = self.conn.clone();
        conn.xadd_maxlen::<_, _, _, _, ()>(
            self.dead_letter_key(),
            redis::streams::StreamMaxlen::Approx(DEAD_LETTER_MAX),
            "*",
            &[
                ("original_id", message.entry_id.as_str()),
                ("reason", reason),
                ("body", body.as_str()),
            ],
        )
        .await?;
        Ok(())
    }

    /// The newest dead letters first.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = conn
            .xrevrange_count(self.dead_letter_key(), "+", "-", count)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| DeadLetter {
                original_id: entry.get("original_id").unwrap_or_default(),
                reason: entry.get("reason").unwrap_or_default(),
                body: entry.get("body").unwrap_or_default(),
                id: entry.id,
            })
            .collect())
    }

    // ---- event stream ----

    /// The event stream (see [`crate::events`]): one hash tag, so a Redis Cluster keeps
    /// it on one shard.
    pub fn events_key(&self) -> String {
        format!("{}:{{events}}", self.prefix)
    }

    /// Appends events (each its wire JSON, in the field `event`) in one pipelined round
    /// trip, trimming the stream to about `maxlen` entries (`MAXLEN ~`: whole nodes at a
    /// time, so it may hold a few more). Returns the entry ids, in order.
    pub async fn add_events(&self, events: &[String], maxlen: usize) -> Result<Vec<String>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.events_key();
        let mut pipe = redis::pipe();
        for event in events {
            pipe.xadd_maxlen(
                &key,
                redis::streams::StreamMaxlen::Approx(maxlen),
                "*",
                &[(EVENT_FIELD, event.as_str())],
            );
        }
        let mut conn = self.conn.clone();
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// Reads up to `count` events after the entry `after` (`"$"`: only events added
    /// from now on; `"0"`: from the oldest the stream keeps), waiting up to `block` for
    /// one when there is none (`None`: not at all). Uses the caller's dedicated
    /// connection. Returns (entry id, the `event` field) pairs, oldest first; an entry
    /// without the field comes back with an empty text.
    pub async fn read_events(
        &self,
        popper: &mut HintPopper,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<(String, String)>> {
        let mut options = StreamReadOptions::default().count(count);
        if let Some(block) = block {
            options = options.block(block.as_millis() as usize);
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg(&options)
            .arg("STREAMS")
            .arg(self.events_key())
            .arg(after);
        let reply: Option<StreamReadReply> = popper.query(&cmd).await?;
        Ok(reply
            .map(|reply| {
                reply
                    .keys
                    .into_iter()
                    .flat_map(|key| key.ids)
                    .map(|entry| {
                        let event = entry.get::<String>(EVENT_FIELD).unwrap_or_default();
                        (entry.id, event)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The id of the newest entry of the event stream, if it has one: where a reader
    /// that wants only new events starts without missing one between two reads.
    pub async fn last_event_id(&self) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            conn.xrevrange_count(self.events_key(), "+", "-", 1).await?;
        Ok(reply.ids.into_iter().next().map(|entry| entry.id))
    }
}

/// The field of an event stream entry that holds the event's JSON.
pub const EVENT_FIELD: &str = "event";

fn inbox_message(entry: StreamId) -> InboxMessage {
    let fields: Vec<(String, String)> = entry
        .map
        .keys()
        .map(|field| {
            (
                field.clone(),
                entry.get::<String>(field).unwrap_or_default(),
            )
        })
        .collect();
    InboxMessage {
        body: entry.get("job"),
        entry_id: entry.id,
        fields,
    }
}

async fn cluster_connection(
    nodes: &[String],
    response_timeout: Duration,
) -> Result<ClusterConnection> {
    let client = ClusterClient::builder(nodes.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(response_timeout)
        .build()?;
    Ok(client.get_async_connection().await?)
}

enum PopperConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A dedicated connection for blocking reads (hint pops, inbox reads).
pub struct HintPopper {
    conn: PopperConn,
}

impl HintPopper {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<T> {
        match &mut self.conn {
            PopperConn::Single(conn) => cmd.query_async(conn).await,
            PopperConn::Cluster(conn) => cmd.query_async(conn).await,
        }
    }
}

impl HintPopper {
    /// Pops up to `max` hints from the first non-empty list of `keys` (highest priority
    /// first), waiting up to `timeout` for one to arrive. Returns the list popped from
    /// and the hints, oldest first.
    pub async fn pop(
        &mut self,
        keys: &[String; 3],
        max: usize,
        timeout: Duration,
    ) -> Result<Option<(String, Vec<String>)>> {
        let mut cmd = redis::cmd("BLMPOP");
        cmd.arg(timeout.as_secs_f64())
            .arg(keys.len())
            .arg(keys.as_slice())
            .arg("RIGHT")
            .arg("COUNT")
            .arg(max.max(1));
        // Hints are read as bytes: anyone with access to Redis can push junk, and one
        // element that is not UTF-8 would fail the decoding of the whole reply, losing
        // the valid hints popped with it. Junk is skipped one element at a time.
        let reply: Option<(String, Vec<Vec<u8>>)> = self.query(&cmd).await?;
        Ok(reply.map(|(key, raw)| {
            let hints = raw
                .into_iter()
                .filter_map(|hint| match String::from_utf8(hint) {
                    Ok(hint) => Some(hint),
                    Err(err) => {
                        let shown = String::from_utf8_lossy(err.as_bytes());
                        let shown: String = shown.chars().take(80).collect();
                        tracing::warn!(list = %key, hint = %shown, "skipping a dispatch hint that is not UTF-8");
                        None
                    }
                })
                .collect();
            (key, hints)
        }))
    }
}

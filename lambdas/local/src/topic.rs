//! The in-process topic: what SNS (and, for presence, the SQS queue) does on AWS. Publishing wraps
//! the room event in the SNS record a subscribed Lambda would receive and hands it to the room's
//! lane: one task per active room, so one busy room never delays another. A lane delivers chat
//! events (`message`, `recalled`) at once, in publication order, in batches of whatever queued
//! up meanwhile; presence changes wait for the coalescing window and go out after the messages
//! as one batch, so a join storm never holds up a chat message. Every batch goes through the
//! fan-out handler, the path the Lambda runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::sns::{SnsEvent, SnsRecord};
use chat_core::ChatService;
use chat_core::domain::RoomName;
use chat_core::ports::{Clock, PortError, PortResult, RoomEvent, Topic};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Events waiting in one room's lane before its publishers are slowed down.
const LANE_QUEUE: usize = 10_000;
/// Most chat events handed to the fan-out handler at once.
const MAX_BATCH: usize = 256;
/// A lane with nothing to do for this long ends; the next event starts a new one.
const LANE_IDLE: Duration = Duration::from_secs(30);

/// One event on its way to a lane.
#[derive(Debug)]
struct Queued {
    record: SnsRecord,
    presence: bool,
}

/// The open lanes by room, each with the generation number of the task that drains it.
type Lanes = Arc<Mutex<HashMap<RoomName, (u64, mpsc::Sender<Queued>)>>>;

/// Who receives the topic's batches: the fan-out handler (as the Lambda subscribed to SNS), or a
/// test's channel.
#[async_trait]
pub trait Subscriber: Send + Sync + std::fmt::Debug {
    async fn deliver(&self, event: SnsEvent);
}

/// The fan-out handler as the topic's subscriber: the path the Lambda runs.
#[derive(Debug)]
pub struct Fanout(pub Arc<ChatService>);

#[async_trait]
impl Subscriber for Fanout {
    async fn deliver(&self, event: SnsEvent) {
        match chat_handlers::fanout::handle(&self.0, &event).await {
            Ok(reports) => {
                for r in reports
                    .iter()
                    .filter(|r| !r.removed.is_empty() || r.failed > 0)
                {
                    debug!(removed = ?r.removed, failed = r.failed, "fan-out cleaned up");
                }
            }
            Err(e) => warn!(error = %e, "fan-out failed"),
        }
    }
}

/// What every lane shares: where batches go and the presence window.
#[derive(Debug, Clone)]
struct LaneContext {
    subscriber: Arc<dyn Subscriber>,
    window: Duration,
    lanes: Lanes,
}

#[derive(Debug)]
pub struct LocalTopic {
    arn: String,
    clock: Arc<dyn Clock>,
    /// Set once the fan-out runs ([`LocalTopic::start`]); until then publishing fails.
    context: Mutex<Option<LaneContext>>,
    lanes: Lanes,
    generation: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalTopic {
    pub fn new(arn: String, clock: Arc<dyn Clock>) -> Self {
        Self {
            arn,
            clock,
            context: Mutex::new(None),
            lanes: Arc::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Start delivering to `chat`'s fan-out (the topic is built before the service it feeds),
    /// holding presence for the service's coalescing window.
    pub fn start(&self, chat: Arc<ChatService>) {
        let window_ms = chat.config().presence_push.window_ms.max(0);
        let window = Duration::from_millis(u64::try_from(window_ms).unwrap_or(0));
        self.subscribe(Arc::new(Fanout(chat)), window);
    }

    /// Start delivering to `subscriber`, holding presence changes for `window`.
    pub fn subscribe(&self, subscriber: Arc<dyn Subscriber>, window: Duration) {
        *lock(&self.context) = Some(LaneContext {
            subscriber,
            window,
            lanes: Arc::clone(&self.lanes),
        });
    }

    /// Stop: no new events are taken; lanes end once they have delivered what they hold.
    pub fn stop(&self) {
        *lock(&self.context) = None;
        lock(&self.lanes).clear();
    }

    /// The lane of `room`, started when the room has none.
    fn lane(&self, room: &RoomName) -> PortResult<mpsc::Sender<Queued>> {
        let context = lock(&self.context)
            .clone()
            .ok_or_else(|| PortError::new("the local fan-out is not running (server stopped)"))?;
        let mut lanes = lock(&self.lanes);
        if let Some((_, tx)) = lanes.get(room).filter(|(_, tx)| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lanes.insert(room.clone(), (generation, tx.clone()));
        tokio::spawn(run_lane(context, room.clone(), generation, rx));
        Ok(tx)
    }
}

#[async_trait]
impl Topic for LocalTopic {
    async fn publish(&self, event: &RoomEvent) -> PortResult<()> {
        let at = DateTime::<Utc>::from_timestamp_millis(self.clock.now_ms()).unwrap_or_default();
        let message_id = ulid::Ulid::generate().to_string();
        let sns = chat_handlers::events::sns_event(event, &self.arn, message_id, at);
        let presence = matches!(
            event.frame,
            chat_core::protocol::ServerFrame::Presence { .. }
        );
        let mut pending: Vec<Queued> = sns
            .records
            .into_iter()
            .map(|record| Queued { record, presence })
            .collect();
        // A lane that ended between our lookup and our send hands the event back: start a new
        // one. Its queue was empty when it ended, so nothing overtakes anything.
        for _ in 0..3 {
            let Some(queued) = pending.pop() else {
                return Ok(());
            };
            match self.lane(&event.room)?.send(queued).await {
                Ok(()) => {}
                Err(mpsc::error::SendError(back)) => pending.push(back),
            }
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(PortError::new(
                "the local fan-out lane of this room keeps stopping",
            ))
        }
    }
}

/// One room's lane: chat events at once, presence after its window, until idle.
async fn run_lane(
    context: LaneContext,
    room: RoomName,
    generation: u64,
    mut rx: mpsc::Receiver<Queued>,
) {
    let mut presence: Vec<SnsRecord> = Vec::new();
    let mut flush_at: Option<Instant> = None;
    loop {
        let idle_at = Instant::now() + LANE_IDLE;
        tokio::select! {
            // A due presence flush goes first, so a steady stream of messages cannot starve it;
            // it is due at most once per window.
            biased;
            () = sleep_until_some(flush_at) => {
                flush_at = None;
                deliver(&*context.subscriber, std::mem::take(&mut presence)).await;
            }
            next = rx.recv() => {
                let Some(first) = next else { break };
                let mut chat = Vec::new();
                let mut take = |q: Queued, chat: &mut Vec<SnsRecord>| {
                    if q.presence {
                        presence.push(q.record);
                    } else {
                        chat.push(q.record);
                    }
                };
                take(first, &mut chat);
                // Whatever queued while the last batch went out goes in this one.
                while chat.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(q) => take(q, &mut chat),
                        Err(_) => break,
                    }
                }
                if !chat.is_empty() {
                    deliver(&*context.subscriber, chat).await;
                }
                if !presence.is_empty() && flush_at.is_none() {
                    flush_at = Some(Instant::now() + context.window);
                }
            }
            () = tokio::time::sleep_until(idle_at), if flush_at.is_none() => {
                // End only with an empty queue, and under the lanes' lock, so no publisher can
                // slip an event into a lane that is going away.
                let mut lanes = lock(&context.lanes);
                if rx.is_empty() {
                    if lanes.get(&room).is_some_and(|(g, _)| *g == generation) {
                        lanes.remove(&room);
                    }
                    rx.close();
                    break;
                }
            }
        }
    }
    // Closed: deliver what is left, presence last.
    let mut chat = Vec::new();
    while let Ok(q) = rx.try_recv() {
        if q.presence {
            presence.push(q.record);
        } else {
            chat.push(q.record);
        }
    }
    if !chat.is_empty() {
        deliver(&*context.subscriber, chat).await;
    }
    if !presence.is_empty() {
        deliver(&*context.subscriber, presence).await;
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hand one batch of records to the subscriber, as SNS hands an event to the Lambda.
async fn deliver(subscriber: &dyn Subscriber, records: Vec<SnsRecord>) {
    let mut event = SnsEvent::default();
    event.records = records;
    subscriber.deliver(event).await;
}

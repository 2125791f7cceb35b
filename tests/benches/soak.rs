//! Soak: the real `chatctl dev` binary under a long, churning load, with every message accounted
//! for and the server's memory and descriptors sampled over time (issue 12, deliverable 2).
//!
//! `cargo build --release -p chatctl && cargo bench -p chatctl-e2e --bench soak -- [--clients 1000]
//!  [--rooms 5] [--minutes 10 | --seconds 60] [--sample-every 10] [--send-every-ms 10000]
//!  [--reconnect-every 60] [--ping-every 25] [--ramp-seconds 20] [--settle-ms 5000]
//!  [--rss-growth-pct 10] [--rate 100] [--cursor-margin-ms 0] [--bin PATH]`
//!
//! The server is a child process (`chatctl dev --allow-anonymous --port 0` on a fresh data dir,
//! 127.0.0.1), with the rate limit raised to `--rate` frames/s (burst 4×) so the limiter never
//! refuses a frame of this load; `--bin` defaults to `$CARGO_TARGET_DIR/release/chatctl` (else
//! the release binary next to this bench's own executable).
//!
//! **The load.** `--clients` clients, client `i` is user `u{i}` in room `soak-{i % rooms}`, start
//! staggered over `--ramp-seconds`. Each one:
//! - sends a message every ~`--send-every-ms` (uniform ±50 %), text `s{i}-{seq}` and
//!   `clientMsgId` `c{i}-{seq}`, seq 1, 2, 3, … (sends are not held back for acks);
//! - pings every ~`--ping-every` seconds (§7);
//! - every ~`--reconnect-every` seconds leaves: a third of the time with the `leave` action
//!   first (waiting for its own `left`), then it closes the socket; it waits 0.3–3 s (one time in
//!   five 5–15 s, so a catch-up needs several pages) and connects again. Server-initiated closes
//!   (1008, 1001, errors) reconnect the same way after 0.2–1 s;
//! - on every (re)connect sends `presence`, then catches up with
//!   `{"action":"history","room":R,"after":CURSOR,"limit":100}` pages (§2, §6, §7) until
//!   `more` is false, and resends every unacked send with its original `clientMsgId` (§9).
//!   CURSOR is the highest id seen live or in history once the previous catch-up finished, or
//!   the last page's last id when the connection dropped during a catch-up; for the first
//!   connection it is a ULID made from the wall clock just before connecting (any ULID is a
//!   valid cursor, §3), so messages stored while the first upgrade ran are fetched as well.
//!
//! Frames that arrive after a client decided to close (it sent the close frame) are not counted:
//! the app has gone. `presence`, `presence_batch`, `occupancy`, `members`, `pong` are ignored.
//!
//! **Stopping.** After the run time no new message is sent and nobody leaves; clients that are
//! away reconnect and catch up, unacked sends are retried (also every 10 s while unacked) until
//! every client has no unacked send and no catch-up in flight (at most 180 s), then the line is
//! given `--settle-ms` for live frames in flight. Then every client closes. A verifier connection
//! reads each room's whole history (`after` the nil id), the store's own record.
//!
//! **Accounting** (for each client, the receiver, in its one room). The client is subscribed
//! from its first connect to the end of the run, with reconnects in between. Expected: every
//! message *acked* in its room whose id is greater than its first cursor. The messages received
//! live (`message` frames, on any of its connections) plus those in its catch-up `history` pages
//! must contain every expected id:
//! - **lost**: expected ids received neither way;
//! - **duplicated**: nothing is de-duplicated before counting. An id received live more than once
//!   counts each extra copy, as does an id in catch-up pages more than once, as does a second
//!   stored copy of one (sender, seq) (an idempotency failure, found by the verifier) and an ack
//!   naming two different ids for one send. An id received once live *and* once in a catch-up
//!   page is listed apart as *overlap*: the protocol says live frames and pages overlap (§6:
//!   "de-duplicate by id"), it is the price of catching up while subscribed, not a fault;
//! - **misordered**: per connection, a live message of a sender whose seq is lower than one
//!   already received live from that sender; and in the store, a sender whose ids do not
//!   increase with its seq (ids are the room's order, §6, so that would reorder every reader).
//!
//! Also counted, not judged: live messages whose id is below one already received live on that
//! connection (another sender's message published out of id order) with how far behind they
//! were, the overlap, acked ids the store lacks and stored ids never acked (both should be 0).
//! Each lost id is diagnosed: the connection open when it was stored, the live ids above it that
//! connection had received, whether it arrived there after the client's close (such frames are
//! read and dropped, their ids kept for this only), and the next catch-up's cursor.
//!
//! `--cursor-margin-ms N` (an experiment; default 0, the protocol's rule) resumes each catch-up
//! N ms (by id time) below the highest id seen, so a message published behind a higher id is
//! fetched again; ids a later catch-up fetches again are then counted apart, not as duplicates.
//!
//! **Resources.** The server's VmRSS (/proc/PID/status) and open descriptors (/proc/PID/fd) every
//! `--sample-every` seconds, as a table (with the server's CPU use, this process's RSS and the
//! load's counters). Flatness: the mean RSS of the run's last third over that of its second
//! third (the first third is warm-up); the least-squares slope after warm-up is printed too.
//!
//! Exits non-zero when lost, duplicated or misordered is above 0, when RSS grew more than
//! `--rss-growth-pct` (10) after warm-up, or when clients did not settle or finish.
//!
//! 1,000 clients and the server each hold more than 1,000 descriptors; the soft open-file limit
//! is raised to the hard one with `prlimit` when short (the server inherits it), else the bench
//! says to run `ulimit -n`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatctl_e2e::dev::Dev;
use chatctl_e2e::{bench_arg, enc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use ulid::Ulid;

/// One stored message as the verifier read it: its id, and sender and seq from its text.
type Stored = (u128, Option<(u32, u32)>);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one connect may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// A send unacked for this long on an open connection is sent again (same `clientMsgId`).
const RESEND_AFTER: Duration = Duration::from_secs(10);
/// After the run: how long clients have to reconnect, catch up and get every ack.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// Upper bound on connections one client opens (every loop here is bounded).
const MAX_SESSIONS: usize = 100_000;
/// Catch-up page size.
const PAGE: usize = 100;

// ---------------------------------------------------------------------------------------------
// Parameters

#[derive(Debug, Clone)]
struct Params {
    bin: PathBuf,
    clients: usize,
    rooms: usize,
    run: Duration,
    sample_every: Duration,
    send_every_ms: u64,
    reconnect_every_ms: u64,
    ping_every_ms: u64,
    ramp: Duration,
    settle: Duration,
    rss_growth_pct: f64,
    rate: usize,
    cursor_margin_ms: u64,
}

fn str_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn default_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("release").join("chatctl");
    }
    // target/release/deps/soak-… → target/release/chatctl
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("chatctl"))
        .unwrap()
}

impl Params {
    fn parse() -> Self {
        let run = match str_arg("--seconds").and_then(|s| s.parse::<u64>().ok()) {
            Some(s) => Duration::from_secs(s),
            None => Duration::from_secs(60 * bench_arg("--minutes", 10) as u64),
        };
        let clients = bench_arg("--clients", 1000).max(1);
        let default_ramp = (run.as_secs() / 4).clamp(1, 20) as usize;
        Self {
            bin: str_arg("--bin").map_or_else(default_bin, PathBuf::from),
            clients,
            rooms: bench_arg("--rooms", 5).clamp(1, clients),
            run,
            sample_every: Duration::from_secs(bench_arg("--sample-every", 10).max(1) as u64),
            send_every_ms: bench_arg("--send-every-ms", 10_000).max(10) as u64,
            reconnect_every_ms: 1000 * bench_arg("--reconnect-every", 60).max(1) as u64,
            ping_every_ms: 1000 * bench_arg("--ping-every", 25).max(1) as u64,
            ramp: Duration::from_secs(bench_arg("--ramp-seconds", default_ramp) as u64),
            settle: Duration::from_millis(bench_arg("--settle-ms", 5000) as u64),
            rss_growth_pct: bench_arg("--rss-growth-pct", 10) as f64,
            rate: bench_arg("--rate", 100).max(1),
            cursor_margin_ms: bench_arg("--cursor-margin-ms", 0) as u64,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// xorshift64*: reproducible per client, no dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi.saturating_sub(lo)).max(1)
    }
    /// Uniform in [mean/2, 3·mean/2].
    fn jitter(&mut self, mean_ms: u64) -> Duration {
        Duration::from_millis(self.range(mean_ms / 2, mean_ms * 3 / 2 + 1))
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

fn parse_id(v: &Value) -> Option<u128> {
    Ulid::from_string(v.as_str()?).ok().map(|u| u.0)
}

fn id_string(id: u128) -> String {
    Ulid(id).to_string()
}

/// `s{sender}-{seq}` → (sender, seq).
fn parse_text(v: &Value) -> Option<(u32, u32)> {
    let (s, q) = v.as_str()?.strip_prefix('s')?.split_once('-')?;
    Some((s.parse().ok()?, q.parse().ok()?))
}

/// `c{client}-{seq}` → seq, when it is this client's.
fn parse_cmid(v: &Value, me: usize) -> Option<u32> {
    let (c, q) = v.as_str()?.strip_prefix('c')?.split_once('-')?;
    (c.parse::<usize>().ok()? == me).then_some(())?;
    q.parse().ok()
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: impl Into<String>) {
    *map.lock().unwrap().entry(key.into()).or_default() += 1;
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Open-file limit (same approach as the room bench: `setrlimit` needs `unsafe`, which the
// workspace forbids, so util-linux's `prlimit` raises this process's soft limit; the server,
// spawned afterwards, inherits it)

fn fd_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.split_whitespace().skip(3);
    let mut value = || match fields.next()? {
        "unlimited" => Some(u64::MAX),
        v => v.parse::<u64>().ok(),
    };
    Some((value()?, value()?))
}

fn ensure_fd_limit(needed: u64) {
    let Some((soft, hard)) = fd_limits() else {
        println!("open-file limit unknown (no /proc/self/limits); {needed} descriptors needed");
        return;
    };
    if soft >= needed {
        println!("open-file limit: soft {soft}, hard {hard} (needs {needed} per process)");
        return;
    }
    if hard >= needed {
        let pid = std::process::id().to_string();
        let raised = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status()
            .is_ok_and(|s| s.success());
        if raised && fd_limits().is_some_and(|(soft, _)| soft >= needed) {
            println!("open-file soft limit raised from {soft} to {hard} (needs {needed})");
            return;
        }
    }
    eprintln!(
        "open-file limit {soft} (hard {hard}) is below the {needed} this run needs (the bench and \
         the server each hold a socket per client) and could not be raised: run `ulimit -n \
         {needed}` (or higher) in this shell first, or pass a smaller --clients"
    );
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------------------
// Server resources

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of `pid` in clock ticks (`/proc/PID/stat` fields 14 and 15; the
/// command name in field 2 may hold spaces, so fields are counted after its `)`).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn fd_count(pid: &str) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    phase: &'static str,
    rss_kib: u64,
    fds: usize,
    /// The server's CPU use since the previous sample, in % of one core.
    cpu_pct: f64,
    bench_rss_kib: u64,
    connected: usize,
    acked: u64,
    live: u64,
    reconnects: u64,
    pages: u64,
}

// ---------------------------------------------------------------------------------------------
// The clients

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    Stop,
    Finish,
}

/// Live counters for the table, shared by every client.
#[derive(Debug, Default)]
struct Shared {
    connected: AtomicUsize,
    settled: AtomicUsize,
    finished: AtomicUsize,
    acked: AtomicU64,
    live: AtomicU64,
    pages: AtomicU64,
    reconnects: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    server_closes: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug)]
struct Pending {
    sent_at: Instant,
    resend_at: Option<Instant>,
}

#[derive(Debug, Default, Clone)]
struct SendRec {
    acked: Option<u128>,
    /// Acks that named another id than the first ack of this send.
    conflicting: u32,
    duplicate_acks: u32,
    /// `send` frames for this seq (the first one and every retry).
    frames: u32,
}

#[derive(Debug, Clone)]
struct SessionRec {
    opened_ms: u64,
    closed_ms: u64,
    cursor: u128,
    caught_up: bool,
    /// This connection's live receipts: `Report::live[live_from..live_to]`.
    live_from: usize,
    live_to: usize,
    /// `message` ids that arrived after the client sent its close (not counted as received).
    drained: Vec<u128>,
}

/// What one client saw; the accounting runs on these after the run.
#[derive(Debug, Default)]
struct Report {
    idx: usize,
    room: usize,
    start_cursor: u128,
    live: Vec<u128>,
    /// Catch-up items with the index of the connection whose catch-up fetched them.
    hist: Vec<(u128, u32)>,
    /// Live messages that came after a higher id on their connection, by how far (id time)
    /// behind it: < 1 ms, < 10 ms, < 100 ms, < 1 s, more.
    inversion_lag: [u64; 5],
    inversion_lag_max_ms: u64,
    /// By seq − 1.
    sends: Vec<SendRec>,
    misordered_live: u64,
    live_id_inversions: u64,
    sessions: Vec<SessionRec>,
    voluntary_closes: u64,
    leaves: u64,
    server_closes: u64,
    connect_failures: u64,
    pages: u64,
    timeout_resends: u64,
    empty_more_pages: u64,
    unexpected: u64,
    unacked_at_end: usize,
    settled_at_end: bool,
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed (its reconnect timer).
    Left,
    /// The server closed it, or it broke.
    Server(String),
    /// The run is over.
    Finish,
}

/// One client's state across its connections.
struct ClientState {
    me: usize,
    room: String,
    user: String,
    report: Report,
    pending: BTreeMap<u32, Pending>,
    /// The highest id seen live or in history.
    max_seen: u128,
    /// `Some(cursor)` while this connection's catch-up is in flight: its next page's cursor.
    catchup: Option<u128>,
    /// Per connection: the last seq received live from each sender, the highest live id.
    last_seq: HashMap<u32, u32>,
    max_live: u128,
    /// Set when an answer says to reconnect (`forbidden` without `ref`: not registered).
    reconnect_now: bool,
    /// The index of the current connection in `report.sessions`.
    session: u32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientState").field("me", &self.me).finish()
    }
}

impl ClientState {
    fn send_frame(&mut self, seq: u32) -> String {
        self.report.sends[seq as usize - 1].frames += 1;
        json!({"action":"send","room":self.room,"text":format!("s{}-{seq}", self.me),
               "clientMsgId":format!("c{}-{seq}", self.me)})
        .to_string()
    }

    fn history_frame(&self, after: u128) -> String {
        json!({"action":"history","room":self.room,"after":id_string(after),"limit":PAGE})
            .to_string()
    }

    /// Handle one text frame; frames to send in answer go to `out`. True when it is this
    /// client's own `left` (the answer to its `leave`).
    fn handle(&mut self, text: &str, out: &mut Vec<String>) -> bool {
        // The frames this bench ignores, without parsing them (a `members` list is ~12 KB).
        for skip in [
            r#"{"type":"presence_batch""#,
            r#"{"type":"occupancy""#,
            r#"{"type":"members""#,
            r#"{"type":"pong""#,
        ] {
            if text.starts_with(skip) {
                return false;
            }
        }
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            bump(&self.shared.errors, "frame is not JSON");
            return false;
        };
        match v["type"].as_str().unwrap_or_default() {
            "message" => {
                let Some(id) = parse_id(&v["id"]) else {
                    self.report.unexpected += 1;
                    return false;
                };
                if v["room"].as_str() != Some(self.room.as_str()) {
                    self.report.unexpected += 1;
                    return false;
                }
                self.report.live.push(id);
                self.shared.live.fetch_add(1, Relaxed);
                if id < self.max_live {
                    self.report.live_id_inversions += 1;
                    let lag = Ulid(self.max_live)
                        .timestamp_ms()
                        .saturating_sub(Ulid(id).timestamp_ms());
                    let bucket = match lag {
                        0 => 0,
                        1..=9 => 1,
                        10..=99 => 2,
                        100..=999 => 3,
                        _ => 4,
                    };
                    self.report.inversion_lag[bucket] += 1;
                    self.report.inversion_lag_max_ms = self.report.inversion_lag_max_ms.max(lag);
                } else {
                    self.max_live = id;
                }
                self.max_seen = self.max_seen.max(id);
                if let Some((sender, seq)) = parse_text(&v["text"]) {
                    let last = self.last_seq.entry(sender).or_insert(0);
                    if seq < *last {
                        self.report.misordered_live += 1;
                    } else {
                        *last = seq;
                    }
                }
            }
            "history" => {
                if self.catchup.is_none() {
                    self.report.unexpected += 1;
                    return false;
                }
                self.report.pages += 1;
                self.shared.pages.fetch_add(1, Relaxed);
                let mut last = None;
                for item in v["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(id) = parse_id(&item["id"]) {
                        self.report.hist.push((id, self.session));
                        self.max_seen = self.max_seen.max(id);
                        last = Some(id);
                    }
                }
                if v["more"] == true {
                    if let Some(last) = last {
                        self.catchup = Some(last);
                        out.push(self.history_frame(last));
                    } else {
                        self.report.empty_more_pages += 1;
                        self.catchup = None;
                    }
                } else {
                    self.catchup = None;
                }
            }
            "ack" => {
                let (Some(seq), Some(id)) =
                    (parse_cmid(&v["clientMsgId"], self.me), parse_id(&v["id"]))
                else {
                    self.report.unexpected += 1;
                    return false;
                };
                let Some(rec) = self.report.sends.get_mut(seq as usize - 1) else {
                    self.report.unexpected += 1;
                    return false;
                };
                match rec.acked {
                    None => {
                        rec.acked = Some(id);
                        self.shared.acked.fetch_add(1, Relaxed);
                    }
                    Some(first) if first != id => rec.conflicting += 1,
                    Some(_) => {}
                }
                if v["duplicate"] == true {
                    rec.duplicate_acks += 1;
                }
                self.pending.remove(&seq);
            }
            "error" => {
                let code = v["code"].as_str().unwrap_or("?").to_owned();
                bump(&self.shared.errors, format!("error frame: {code}"));
                match parse_cmid(&v["ref"], self.me) {
                    // A refused or failed send: again in a second (idempotent by clientMsgId).
                    Some(seq) => {
                        if let Some(p) = self.pending.get_mut(&seq) {
                            p.resend_at = Some(Instant::now() + Duration::from_secs(1));
                        }
                    }
                    // Not registered any more (§5): reconnect.
                    None if code == "forbidden" => self.reconnect_now = true,
                    None => {}
                }
            }
            "presence" => {
                return v["state"] == "left"
                    && v["user"].as_str() == Some(self.user.as_str())
                    && v["room"].as_str() == Some(self.room.as_str());
            }
            "recalled" => {}
            _ => self.report.unexpected += 1,
        }
        false
    }
}

fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    // 8 KiB read chunks, as the room bench: tungstenite's 128 KiB default is zeroed per read.
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024)
}

async fn connect(url: &str) -> Result<Ws, String> {
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true);
    match tokio::time::timeout(CONNECT_WAIT, connect).await {
        Err(_) => Err("connect timed out".into()),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            Err(format!("upgrade refused: {}", resp.status().as_u16()))
        }
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

async fn send_all(ws: &mut Ws, frames: Vec<String>) -> bool {
    for f in frames {
        if ws.feed(Message::text(f)).await.is_err() {
            return false;
        }
    }
    ws.flush().await.is_ok()
}

/// Close from our side and read until the server's close, briefly. Nothing read here counts as
/// received (the app has gone); the ids of the `message` frames are returned, for diagnosis only.
async fn close_quietly(mut ws: Ws) -> Vec<u128> {
    let mut drained = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && t.as_str().starts_with(r#"{"type":"message""#)
                && let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                && let Some(id) = parse_id(&v["id"])
            {
                drained.push(id);
            }
        }
    })
    .await;
    drained
}

/// Sleep, cut short when the run finishes. False when it did.
async fn pause(d: Duration, phase: &mut watch::Receiver<Phase>) -> bool {
    let until = Instant::now() + d;
    // Bounded: each pass either sleeps to `until` or sees a phase change (three at most).
    for _ in 0..8 {
        if *phase.borrow() == Phase::Finish {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            changed = phase.changed() => if changed.is_err() { return false },
        }
    }
    *phase.borrow() != Phase::Finish
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    me: usize,
    p: Arc<Params>,
    base: String,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    start_at: Instant,
    hard_end: Instant,
) -> Report {
    let room_idx = me % p.rooms;
    let room = format!("soak-{room_idx}");
    let user = format!("u{me}");
    let url = format!("{base}?room={}&user={}", enc(&room), enc(&user));
    let mut rng = Rng::new(me as u64 + 1);
    tokio::time::sleep_until(start_at).await;
    let start_cursor = Ulid::from_parts(now_ms(), 0).0;
    let mut st = ClientState {
        me,
        room,
        user,
        report: Report {
            idx: me,
            room: room_idx,
            start_cursor,
            ..Report::default()
        },
        pending: BTreeMap::new(),
        max_seen: start_cursor,
        catchup: None,
        last_seq: HashMap::new(),
        max_live: 0,
        reconnect_now: false,
        session: 0,
        shared: Arc::clone(&shared),
    };
    let mut resume = start_cursor;
    let mut settled = false;
    let mut next_send = Instant::now() + rng.jitter(p.send_every_ms);

    for _ in 0..MAX_SESSIONS {
        if *phase.borrow() == Phase::Finish || Instant::now() >= hard_end {
            break;
        }
        let mut ws = match connect(&url).await {
            Ok(ws) => ws,
            Err(e) => {
                st.report.connect_failures += 1;
                bump(&shared.errors, e);
                if !pause(Duration::from_secs(1), &mut phase).await {
                    break;
                }
                continue;
            }
        };
        shared.connected.fetch_add(1, Relaxed);
        let mut session = SessionRec {
            opened_ms: now_ms(),
            closed_ms: 0,
            cursor: resume,
            caught_up: false,
            live_from: st.report.live.len(),
            live_to: 0,
            drained: vec![],
        };
        st.session = st.report.sessions.len() as u32;
        st.catchup = Some(resume);
        st.last_seq.clear();
        st.max_live = 0;
        st.reconnect_now = false;
        let now = Instant::now();
        let mut opening = vec![
            json!({"action":"presence","room":st.room}).to_string(),
            st.history_frame(resume),
        ];
        let unacked: Vec<u32> = st.pending.keys().copied().collect();
        for seq in unacked {
            opening.push(st.send_frame(seq));
            st.pending.insert(
                seq,
                Pending {
                    sent_at: now,
                    resend_at: None,
                },
            );
        }
        let mut ok = send_all(&mut ws, opening).await;
        let mut next_ping = now + rng.jitter(p.ping_every_ms);
        let next_close = now + rng.jitter(p.reconnect_every_ms);
        let mut tick = now + Duration::from_secs(1);
        let mut leaving: Option<Instant> = None;

        let end = loop {
            if !ok {
                break End::Server("send failed".into());
            }
            if st.reconnect_now {
                break End::Server("not registered (forbidden)".into());
            }
            let ph = *phase.borrow();
            if ph == Phase::Finish {
                break End::Finish;
            }
            let now = Instant::now();
            if now >= hard_end {
                break End::Finish;
            }
            // Settled: nothing unacked, no catch-up in flight, not on its way out.
            let is_settled = ph == Phase::Stop
                && st.pending.is_empty()
                && st.catchup.is_none()
                && leaving.is_none();
            if is_settled != settled {
                if is_settled {
                    shared.settled.fetch_add(1, Relaxed);
                } else {
                    shared.settled.fetch_sub(1, Relaxed);
                }
                settled = is_settled;
            }
            let run = ph == Phase::Run;
            let mut wake = next_ping.min(hard_end);
            if leaving.is_none() {
                wake = wake.min(tick);
            }
            if run && leaving.is_none() {
                wake = wake.min(next_send).min(next_close);
            }
            if let Some(l) = leaving {
                wake = wake.min(l);
            }
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() {
                        break End::Finish;
                    }
                }
                next = ws.next() => match next {
                    Some(Ok(Message::Text(t))) => {
                        let mut out = vec![];
                        let own_left = st.handle(t.as_str(), &mut out);
                        if !out.is_empty() {
                            ok = send_all(&mut ws, out).await;
                        }
                        if own_left && leaving.is_some() {
                            break End::Left;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break End::Server(frame.map_or_else(
                            || "close without status".to_owned(),
                            |f| format!("close {} {}", u16::from(f.code), f.reason),
                        ));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break End::Server(format!("socket error: {e}")),
                    None => break End::Server("socket ended".into()),
                },
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    let mut out = vec![];
                    if run && leaving.is_none() && now >= next_send {
                        st.report.sends.push(SendRec::default());
                        let seq = st.report.sends.len() as u32;
                        out.push(st.send_frame(seq));
                        st.pending.insert(seq, Pending { sent_at: now, resend_at: None });
                        next_send = now + rng.jitter(p.send_every_ms);
                    }
                    if now >= next_ping {
                        out.push(r#"{"action":"ping"}"#.to_owned());
                        next_ping = now + rng.jitter(p.ping_every_ms);
                    }
                    if now >= tick && leaving.is_none() {
                        tick = now + Duration::from_secs(1);
                        let due: Vec<u32> = st
                            .pending
                            .iter()
                            .filter(|(_, p)| {
                                p.resend_at.is_some_and(|r| r <= now) || p.sent_at + RESEND_AFTER <= now
                            })
                            .map(|(s, _)| *s)
                            .collect();
                        for seq in due {
                            let p = st.pending.get_mut(&seq).unwrap();
                            if p.resend_at.is_none() {
                                st.report.timeout_resends += 1;
                            }
                            *p = Pending { sent_at: now, resend_at: None };
                            out.push(st.send_frame(seq));
                        }
                    }
                    let mut close = false;
                    if run && leaving.is_none() && now >= next_close {
                        if rng.chance(3) {
                            st.report.leaves += 1;
                            out.push(json!({"action":"leave","room":st.room}).to_string());
                            leaving = Some(now + Duration::from_secs(5));
                        } else {
                            close = true;
                        }
                    }
                    if leaving.is_some_and(|l| now >= l) {
                        close = true;
                    }
                    if !out.is_empty() {
                        ok = send_all(&mut ws, out).await;
                    }
                    if close {
                        break End::Left;
                    }
                }
            }
        };

        shared.connected.fetch_sub(1, Relaxed);
        if settled {
            shared.settled.fetch_sub(1, Relaxed);
            settled = false;
        }
        session.closed_ms = now_ms();
        session.caught_up = st.catchup.is_none();
        session.live_to = st.report.live.len();
        resume = match st.catchup {
            Some(cursor) => cursor,
            // --cursor-margin-ms: resume that far below the highest id seen (0: the highest id
            // seen, as §7 says).
            None if p.cursor_margin_ms > 0 => st.max_seen.min(
                Ulid::from_parts(
                    Ulid(st.max_seen)
                        .timestamp_ms()
                        .saturating_sub(p.cursor_margin_ms),
                    0,
                )
                .0,
            ),
            None => st.max_seen,
        };
        st.catchup = None;
        let finish = matches!(end, End::Finish);
        let wait = match end {
            End::Finish => {
                session.drained = close_quietly(ws).await;
                Duration::ZERO
            }
            End::Left => {
                st.report.voluntary_closes += 1;
                session.drained = close_quietly(ws).await;
                if *phase.borrow() != Phase::Run {
                    Duration::from_millis(100)
                } else if rng.chance(5) {
                    Duration::from_millis(rng.range(5_000, 15_000))
                } else {
                    Duration::from_millis(rng.range(300, 3_000))
                }
            }
            End::Server(why) => {
                st.report.server_closes += 1;
                bump(&shared.server_closes, why);
                drop(ws);
                Duration::from_millis(rng.range(200, 1_000))
            }
        };
        st.report.sessions.push(session);
        if finish {
            break;
        }
        shared.reconnects.fetch_add(1, Relaxed);
        if !pause(wait, &mut phase).await {
            break;
        }
    }
    st.report.unacked_at_end = st.pending.len();
    st.report.settled_at_end =
        st.pending.is_empty() && st.report.sessions.last().is_some_and(|s| s.caught_up);
    shared.finished.fetch_add(1, Relaxed);
    st.report
}

// ---------------------------------------------------------------------------------------------
// The verifier: each room's whole history, as stored

/// Every stored message of `room` in id order: (id, sender and seq from its text).
async fn read_room(ws: &mut Ws, room: &str, max_pages: usize) -> Result<Vec<Stored>, String> {
    let mut cursor = 0u128;
    let mut all = vec![];
    let mut refused = 0;
    for _ in 0..max_pages {
        // Paced under the server's limit (--rate frames/s) with room to spare.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let frame = json!({"action":"history","room":room,"after":id_string(cursor),"limit":PAGE});
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("verifier send: {e}"))?;
        let page = tokio::time::timeout(Duration::from_secs(20), async {
            // Bounded by the timeout around it.
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value =
                            serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                        match v["type"].as_str() {
                            Some("history") => return Ok(Some(v)),
                            Some("error") if v["code"] == "rate_limited" => return Ok(None),
                            Some("error") => return Err(format!("verifier: {t}")),
                            _ => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    other => return Err(format!("verifier socket: {other:?}")),
                }
            }
        })
        .await
        .map_err(|_| "verifier: no history page within 20 s".to_owned())??;
        let Some(page) = page else {
            refused += 1;
            if refused > 30 {
                return Err(format!("verifier: rate_limited {refused} times"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        for item in page["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let id = parse_id(&item["id"]).ok_or("verifier: item without id")?;
            all.push((id, parse_text(&item["text"])));
            cursor = id;
        }
        if page["more"] != true {
            return Ok(all);
        }
    }
    Err(format!("verifier: {room} has more than {max_pages} pages"))
}

// ---------------------------------------------------------------------------------------------
// Accounting

#[derive(Debug, Default)]
struct Totals {
    expected: u64,
    delivered_live: u64,
    recovered_history: u64,
    lost: u64,
    dup_live: u64,
    dup_history: u64,
    overlap: u64,
    misordered_live: u64,
    live_id_inversions: u64,
    receivers_with_loss: u64,
    /// Lost ids below a higher id the client had received live on the same connection, an id
    /// at or below the next catch-up's cursor (which then skipped them).
    lost_behind_higher_id: u64,
    /// Of those, the ones seen arriving on that connection after the client sent its close.
    lost_arrived_after_close: u64,
    refetched_by_margin: u64,
}

/// Sorted, and repeated (id, connection) pairs removed; the count removed.
fn sorted_unique_pairs(mut v: Vec<(u128, u32)>) -> (Vec<(u128, u32)>, u64) {
    v.sort_unstable();
    let before = v.len();
    v.dedup();
    let extra = (before - v.len()) as u64;
    (v, extra)
}

#[derive(Debug)]
struct Diagnosis {
    text: String,
    behind_higher: bool,
    arrived_after_close: bool,
}

/// Where a lost id went: which connection was open when it was stored, whether it arrived on
/// that connection after the client had sent its close, which live ids above it the client had
/// received on that connection, and the cursor the next catch-up used.
fn diagnose(r: &Report, id: u128) -> Diagnosis {
    let ms = Ulid(id).timestamp_ms();
    let during = r
        .sessions
        .iter()
        .position(|s| s.opened_ms <= ms && ms <= s.closed_ms);
    let mut text = format!(
        "client {} (room soak-{}) lost {} (id time {ms} ms): ",
        r.idx,
        r.room,
        id_string(id)
    );
    let (mut behind_higher, mut arrived_after_close) = (false, false);
    match during {
        None => text.push_str("stored while the client was between connections"),
        Some(i) => {
            let s = &r.sessions[i];
            let live = &r.live[s.live_from..s.live_to];
            let higher: Vec<u128> = live.iter().copied().filter(|l| *l > id).collect();
            let drained = s.drained.contains(&id);
            let next = r.sessions.get(i + 1);
            text.push_str(&format!(
                "stored during connection #{i} (open {}..{} ms, closed {} ms after the id time); \
                 it arrived on #{i} after the client sent its close: {}; live ids above it \
                 received on #{i} before the close: {}{}; next catch-up cursor: {}",
                s.opened_ms,
                s.closed_ms,
                s.closed_ms.saturating_sub(ms),
                if drained { "yes" } else { "no" },
                higher.len(),
                higher
                    .iter()
                    .max()
                    .map(|h| format!(" (highest {})", id_string(*h)))
                    .unwrap_or_default(),
                next.map_or_else(|| "none".to_owned(), |n| id_string(n.cursor)),
            ));
            behind_higher = !higher.is_empty() && next.is_some_and(|n| n.cursor > id);
            arrived_after_close = behind_higher && drained;
        }
    }
    Diagnosis {
        text,
        behind_higher,
        arrived_after_close,
    }
}

/// Sorted, and the number of extra copies removed.
fn sorted_unique(mut v: Vec<u128>) -> (Vec<u128>, u64) {
    v.sort_unstable();
    let before = v.len();
    v.dedup();
    let extra = (before - v.len()) as u64;
    (v, extra)
}

fn count_in(sorted: &[u128], id: u128) -> bool {
    sorted.binary_search(&id).is_ok()
}

/// Least-squares slope of y over x (0 with fewer than two points).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if den > 0.0 { num / den } else { 0.0 }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// What the run under the runtime hands back.
#[derive(Debug)]
struct Driven {
    reports: Vec<Report>,
    samples: Vec<Sample>,
    verified: Result<Vec<Vec<Stored>>, String>,
    fds_after_close: usize,
    rss_after_close: u64,
    stop_phase: String,
}

const TABLE_HEAD: [&str; 11] = [
    "t (s)",
    "phase",
    "RSS MiB",
    "fds",
    "CPU %",
    "bench MiB",
    "connected",
    "acked",
    "delivered",
    "reconnects",
    "pages",
];

/// A row every `every` until `stop` (or the hard end), printed as it is taken.
async fn sample_loop(
    pid: String,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    every: Duration,
    t0: Instant,
    hard_end: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let h = TABLE_HEAD;
    println!(
        "\n{:>7}  {:<6} {:>8} {:>6} {:>6} {:>9} {:>9} {:>8} {:>10} {:>10} {:>8}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10]
    );
    let hz = clock_ticks();
    let mut samples = vec![];
    let mut last_cpu = (Instant::now(), cpu_ticks(&pid).unwrap_or(0));
    let mut next = t0;
    // Bounded by the hard end.
    while Instant::now() < hard_end {
        let cpu_now = (Instant::now(), cpu_ticks(&pid).unwrap_or(0));
        let secs = cpu_now.0.duration_since(last_cpu.0).as_secs_f64();
        let cpu_pct = if secs > 0.0 {
            cpu_now.1.saturating_sub(last_cpu.1) as f64 / hz / secs * 100.0
        } else {
            0.0
        };
        last_cpu = cpu_now;
        let s = Sample {
            t: t0.elapsed().as_secs_f64(),
            phase: match *phase.borrow() {
                Phase::Run => "run",
                Phase::Stop => "settle",
                Phase::Finish => "finish",
            },
            rss_kib: rss_kib(&pid).unwrap_or(0),
            fds: fd_count(&pid).unwrap_or(0),
            cpu_pct,
            bench_rss_kib: rss_kib("self").unwrap_or(0),
            connected: shared.connected.load(Relaxed),
            acked: shared.acked.load(Relaxed),
            live: shared.live.load(Relaxed),
            reconnects: shared.reconnects.load(Relaxed),
            pages: shared.pages.load(Relaxed),
        };
        println!(
            "{:>7.0}  {:<6} {:>8.1} {:>6} {:>6.0} {:>9.1} {:>9} {:>8} {:>10} {:>10} {:>8}",
            s.t,
            s.phase,
            mib(s.rss_kib),
            s.fds,
            s.cpu_pct,
            mib(s.bench_rss_kib),
            s.connected,
            s.acked,
            s.live,
            s.reconnects,
            s.pages
        );
        samples.push(s);
        next += every;
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => break,
        }
    }
    samples
}

/// After the run time: wait until every client is settled, give frames in flight `settle`, and
/// check again (a server-side close in the quiet time sends a client back to catching up).
async fn settle(p: &Params, shared: &Shared) -> String {
    let stop_at = Instant::now();
    let deadline = stop_at + SETTLE_LIMIT;
    let mut said = String::new();
    for round in 1..=5 {
        while shared.settled.load(Relaxed) < p.clients && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        said = format!(
            "{} of {} clients settled (every send acked, catch-up done, connected) {:.1} s after \
             the run (round {round}); then {} ms for frames in flight",
            shared.settled.load(Relaxed),
            p.clients,
            stop_at.elapsed().as_secs_f64(),
            p.settle.as_millis()
        );
        tokio::time::sleep(p.settle).await;
        if shared.settled.load(Relaxed) >= p.clients || Instant::now() >= deadline {
            break;
        }
    }
    said
}

/// Every room's stored messages, read by one verifier connection.
async fn verify(base: &str, rooms: usize, max_pages: usize) -> Result<Vec<Vec<Stored>>, String> {
    let mut ws = connect(&format!("{base}?room=soak-verify&user=verifier")).await?;
    let mut all = vec![];
    for r in 0..rooms {
        all.push(read_room(&mut ws, &format!("soak-{r}"), max_pages).await?);
    }
    close_quietly(ws).await;
    Ok(all)
}

async fn drive(p: Arc<Params>, base: String, pid: String, shared: Arc<Shared>) -> Driven {
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let t0 = Instant::now();
    let end_at = t0 + p.run;
    let hard_end = end_at + SETTLE_LIMIT + p.settle * 5 + Duration::from_secs(60);
    let (sampler_stop, sampler_stopped) = watch::channel(false);
    let sampler = tokio::spawn(sample_loop(
        pid.clone(),
        Arc::clone(&shared),
        phase_rx.clone(),
        p.sample_every,
        t0,
        hard_end,
        sampler_stopped,
    ));
    let mut tasks = Vec::with_capacity(p.clients);
    for i in 0..p.clients {
        let start_at = t0 + p.ramp.mul_f64(i as f64 / p.clients as f64);
        tasks.push(tokio::spawn(run_client(
            i,
            Arc::clone(&p),
            base.clone(),
            Arc::clone(&shared),
            phase_rx.clone(),
            start_at,
            hard_end,
        )));
    }

    tokio::time::sleep_until(end_at).await;
    let _ = phase_tx.send(Phase::Stop);
    let stop_phase = settle(&p, &shared).await;
    let _ = phase_tx.send(Phase::Finish);
    let mut reports = Vec::with_capacity(p.clients);
    for t in tasks {
        match tokio::time::timeout_at(hard_end + Duration::from_secs(30), t).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => eprintln!("client task failed: {e}"),
            Err(_) => eprintln!("client task did not finish by the hard deadline"),
        }
    }
    let _ = sampler_stop.send(true);
    let samples = sampler.await.unwrap_or_default();
    // Descriptors once every client closed and the server ran its $disconnects.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fds_after_close = fd_count(&pid).unwrap_or(0);
    let rss_after_close = rss_kib(&pid).unwrap_or(0);
    let sends: usize = reports.iter().map(|r| r.sends.len()).sum();
    let verified = verify(&base, p.rooms, sends / PAGE * 2 + 100).await;
    Driven {
        reports,
        samples,
        verified,
        fds_after_close,
        rss_after_close,
        stop_phase,
    }
}

fn main() {
    let p = Arc::new(Params::parse());
    if !p.bin.is_file() {
        eprintln!(
            "{} not found: build it first with `cargo build --release -p chatctl`, or pass --bin PATH",
            p.bin.display()
        );
        std::process::exit(2);
    }
    ensure_fd_limit(p.clients as u64 + 512);
    println!(
        "soak: {} clients in {} rooms for {} s (ramp {} s), a send every ~{} ms and a reconnect every ~{} s per client, ping every ~{} s; catch-up cursor: {}; server {} (rate limit {}/s, burst {})",
        p.clients,
        p.rooms,
        p.run.as_secs(),
        p.ramp.as_secs(),
        p.send_every_ms,
        p.reconnect_every_ms / 1000,
        p.ping_every_ms / 1000,
        if p.cursor_margin_ms == 0 {
            "the highest id seen (§7)".to_owned()
        } else {
            format!("{} ms below the highest id seen", p.cursor_margin_ms)
        },
        p.bin.display(),
        p.rate,
        p.rate * 4
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let rate = p.rate.to_string();
    let burst = (p.rate * 4).to_string();
    let dev = Dev::start(
        p.bin.to_str().expect("UTF-8 binary path"),
        dir.path(),
        &[
            "--allow-anonymous",
            "--rate-per-second",
            &rate,
            "--rate-burst",
            &burst,
        ],
    );
    let pid = dev.child.id().to_string();
    let base = dev.ready["websocketUrl"].as_str().unwrap().to_owned();
    println!(
        "server pid {pid}, {base}, data dir {}",
        dir.path().display()
    );
    // Let it finish starting (its first SQLite pages, its runtime's threads) before the baseline.
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = rss_kib(&pid).unwrap_or(0);
    let fds_start = fd_count(&pid).unwrap_or(0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut failures: Vec<String> = vec![];
    let shared = Arc::new(Shared::default());
    let Driven {
        reports,
        samples,
        verified,
        fds_after_close,
        rss_after_close,
        stop_phase,
    } = runtime.block_on(drive(
        Arc::clone(&p),
        base,
        pid.clone(),
        Arc::clone(&shared),
    ));
    println!("\n{stop_phase}");
    if reports.len() != p.clients {
        failures.push(format!(
            "{} of {} client tasks returned",
            reports.len(),
            p.clients
        ));
    }

    // --- The store's record (the verifier) ------------------------------------------------------
    let verified_ok = verified.is_ok();
    let stored = match verified {
        Ok(rooms) => rooms,
        Err(e) => {
            failures.push(format!("the store could not be read back: {e}"));
            vec![vec![]; p.rooms]
        }
    };

    // Acked ids per room, from the senders' records.
    let mut acked_by_room: Vec<Vec<u128>> = vec![vec![]; p.rooms];
    let mut sent = 0u64;
    let mut send_frames = 0u64;
    let mut acked = 0u64;
    let mut duplicate_acks = 0u64;
    let mut conflicting_acks = 0u64;
    let mut unacked_at_end = 0u64;
    for r in &reports {
        for s in &r.sends {
            sent += 1;
            send_frames += u64::from(s.frames);
            duplicate_acks += u64::from(s.duplicate_acks);
            conflicting_acks += u64::from(s.conflicting);
            if let Some(id) = s.acked {
                acked += 1;
                acked_by_room[r.room].push(id);
            }
        }
        unacked_at_end += r.unacked_at_end as u64;
    }
    for v in &mut acked_by_room {
        v.sort_unstable();
    }
    let mut stored_total = 0u64;
    let mut dup_stored = 0u64;
    let mut misordered_store = 0u64;
    let mut stored_not_acked = 0u64;
    let mut acked_not_stored = 0u64;
    for (room, items) in stored.iter().enumerate() {
        stored_total += items.len() as u64;
        let mut copies: HashMap<(u32, u32), u32> = HashMap::new();
        let mut last_seq: HashMap<u32, u32> = HashMap::new();
        for (id, key) in items {
            if !count_in(&acked_by_room[room], *id) {
                stored_not_acked += 1;
            }
            if let Some((sender, seq)) = key {
                let c = copies.entry((*sender, *seq)).or_default();
                *c += 1;
                if *c > 1 {
                    dup_stored += 1;
                }
                let last = last_seq.entry(*sender).or_insert(0);
                if *seq < *last {
                    misordered_store += 1;
                } else {
                    *last = *seq;
                }
            }
        }
        if !verified_ok {
            continue;
        }
        let ids: Vec<u128> = items.iter().map(|(id, _)| *id).collect();
        acked_not_stored += acked_by_room[room]
            .iter()
            .filter(|id| ids.binary_search(id).is_err())
            .count() as u64;
    }

    // --- Per receiver ----------------------------------------------------------------------------
    let mut t = Totals::default();
    let mut reconnects = 0u64;
    let mut voluntary = 0u64;
    let mut leaves = 0u64;
    let mut server_closes = 0u64;
    let mut connect_failures = 0u64;
    let mut pages = 0u64;
    let mut timeout_resends = 0u64;
    let mut empty_more = 0u64;
    let mut unexpected = 0u64;
    let mut not_settled = 0u64;
    let mut lost_examples: Vec<String> = vec![];
    let mut inversion_lag = [0u64; 5];
    let mut inversion_lag_max_ms = 0u64;
    for r in reports {
        reconnects += r.sessions.len().saturating_sub(1) as u64;
        voluntary += r.voluntary_closes;
        leaves += r.leaves;
        server_closes += r.server_closes;
        connect_failures += r.connect_failures;
        pages += r.pages;
        timeout_resends += r.timeout_resends;
        empty_more += r.empty_more_pages;
        unexpected += r.unexpected;
        t.misordered_live += r.misordered_live;
        t.live_id_inversions += r.live_id_inversions;
        if !r.settled_at_end {
            not_settled += 1;
        }
        for (b, n) in r.inversion_lag.iter().enumerate() {
            inversion_lag[b] += n;
        }
        inversion_lag_max_ms = inversion_lag_max_ms.max(r.inversion_lag_max_ms);
        let (live, dup_live) = sorted_unique(r.live.clone());
        t.dup_live += dup_live;
        // Within one catch-up, an id twice is the server's; across catch-ups it can only be
        // the server's with no cursor margin (each cursor is at or above the previous pages).
        let (within, within_dups) = sorted_unique_pairs(r.hist.clone());
        let (hist, across) = sorted_unique(within.iter().map(|(id, _)| *id).collect());
        t.dup_history += within_dups;
        if p.cursor_margin_ms == 0 {
            t.dup_history += across;
        } else {
            t.refetched_by_margin += across;
        }
        let expected: Vec<u128> = acked_by_room[r.room]
            .iter()
            .copied()
            .filter(|id| *id > r.start_cursor)
            .collect();
        t.expected += expected.len() as u64;
        let mut lost_here = 0;
        for id in &expected {
            let l = count_in(&live, *id);
            let h = count_in(&hist, *id);
            match (l, h) {
                (true, true) => {
                    t.delivered_live += 1;
                    t.overlap += 1;
                }
                (true, false) => t.delivered_live += 1,
                (false, true) => t.recovered_history += 1,
                (false, false) => {
                    lost_here += 1;
                    let diag = diagnose(&r, *id);
                    if diag.behind_higher {
                        t.lost_behind_higher_id += 1;
                    }
                    if diag.arrived_after_close {
                        t.lost_arrived_after_close += 1;
                    }
                    if lost_examples.len() < 20 {
                        lost_examples.push(diag.text);
                    }
                }
            }
        }
        t.lost += lost_here;
        if lost_here > 0 {
            t.receivers_with_loss += 1;
        }
    }

    // --- Resources over time -----------------------------------------------------------------------
    let run_samples: Vec<&Sample> = samples.iter().filter(|s| s.phase == "run").collect();
    let third = run_samples.len() / 3;
    let second: Vec<f64> = run_samples[third..2 * third]
        .iter()
        .map(|s| s.rss_kib as f64)
        .collect();
    let last: Vec<f64> = run_samples[2 * third..]
        .iter()
        .map(|s| s.rss_kib as f64)
        .collect();
    let (rss_mid, rss_last) = (mean(&second), mean(&last));
    let ratio = if rss_mid > 0.0 {
        rss_last / rss_mid
    } else {
        f64::NAN
    };
    let rss_end_run = run_samples.last().map_or(0, |s| s.rss_kib);
    let fds_peak = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let rss_peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let db_bytes: u64 = std::fs::read_dir(dir.path())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);

    let (_, status) = dev.terminate();

    // --- Summary -------------------------------------------------------------------------------------
    println!("\n## server resources over time (pid {pid})");
    println!(
        "| t (s) | phase | RSS MiB | fds | server CPU % | clients connected | acked | delivered live | reconnects |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &samples {
        println!(
            "| {:.0} | {} | {:.1} | {} | {:.0} | {} | {} | {} | {} |",
            s.t,
            s.phase,
            mib(s.rss_kib),
            s.fds,
            s.cpu_pct,
            s.connected,
            s.acked,
            s.live,
            s.reconnects
        );
    }
    let dup = t.dup_live + t.dup_history + dup_stored + conflicting_acks;
    let misordered = t.misordered_live + misordered_store;
    println!(
        "\n## soak summary ({} clients, {} rooms, {} s)",
        p.clients,
        p.rooms,
        p.run.as_secs()
    );
    println!(
        "messages   sent {sent} (send frames incl. retries {send_frames}, resent after a 10 s silence {timeout_resends}), acked {acked} (duplicate acks {duplicate_acks}), unacked at the end {unacked_at_end}"
    );
    if verified_ok {
        println!(
            "store      {stored_total} messages; acked but not stored {acked_not_stored}; stored but never acked {stored_not_acked}"
        );
    } else {
        println!("store      not read back (see the failure below)");
    }
    println!(
        "delivery   expected {} (receiver × acked message after its first join); delivered live {}, recovered only by history {}, live∩history overlap {} (§6, not counted as duplicates)",
        t.expected, t.delivered_live, t.recovered_history, t.overlap
    );
    println!(
        "LOST {}   (receivers with a loss: {})",
        t.lost, t.receivers_with_loss
    );
    println!(
        "DUPLICATED {dup}   (live twice {}, in catch-up pages twice {}, stored twice {dup_stored}, conflicting acks {conflicting_acks})",
        t.dup_live, t.dup_history
    );
    println!(
        "MISORDERED {misordered}   (live, per sender per connection {}; store, a sender's ids against its seq {misordered_store})",
        t.misordered_live
    );
    println!(
        "info       live messages below an id already received on that connection (another sender's, published out of id order): {} of {} live; by how far behind (id time): <1 ms {}, 1-9 ms {}, 10-99 ms {}, 100-999 ms {}, >=1 s {}; max {} ms",
        t.live_id_inversions,
        t.delivered_live,
        inversion_lag[0],
        inversion_lag[1],
        inversion_lag[2],
        inversion_lag[3],
        inversion_lag[4],
        inversion_lag_max_ms
    );
    println!(
        "info       lost ids below a higher id received live before them on the same connection, skipped by the next catch-up's cursor: {} of {} lost ({} of them seen arriving on that connection after the client's close)",
        t.lost_behind_higher_id, t.lost, t.lost_arrived_after_close
    );
    if p.cursor_margin_ms > 0 {
        println!(
            "info       --cursor-margin-ms {}: catch-ups resumed that far below the highest id seen; ids fetched again by a later catch-up: {}",
            p.cursor_margin_ms, t.refetched_by_margin
        );
    }
    println!(
        "reconnects {reconnects} (client closes {voluntary}, of which after `leave` {leaves}; server-side closes {server_closes}); connect failures {connect_failures}"
    );
    println!(
        "history    {pages} catch-up pages; pages with more=true but no items {empty_more}; unexpected frames {unexpected}"
    );
    for (what, map) in [
        ("server-side closes", &shared.server_closes),
        ("errors", &shared.errors),
    ] {
        let map = map.lock().unwrap();
        let parts: Vec<String> = map.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!(
            "{what:<18} {}",
            if parts.is_empty() {
                "none".to_owned()
            } else {
                parts.join(", ")
            }
        );
    }
    println!(
        "RSS        start {:.1} MiB, after warm-up {:.1} MiB (mean of the run's second third), last third {:.1} MiB, end of run {:.1} MiB, peak {:.1} MiB, after clients closed {:.1} MiB",
        mib(rss_start),
        rss_mid / 1024.0,
        rss_last / 1024.0,
        mib(rss_end_run),
        mib(rss_peak),
        mib(rss_after_close)
    );
    let flat = ratio <= 1.0 + p.rss_growth_pct / 100.0;
    println!(
        "RSS flat   last third / second third = {ratio:.3} ({} and {} samples; threshold {:.2}): {}",
        second.len(),
        last.len(),
        1.0 + p.rss_growth_pct / 100.0,
        if flat { "flat" } else { "GREW" }
    );
    // Not judged: the trend after warm-up, to see a slow creep the thirds may hide.
    let after_warmup: Vec<(f64, f64)> = run_samples[third..]
        .iter()
        .map(|s| (s.t, mib(s.rss_kib)))
        .collect();
    println!(
        "RSS trend  least-squares slope after warm-up: {:.2} MiB/min over {} samples",
        slope(&after_warmup) * 60.0,
        after_warmup.len()
    );
    let fds_end_run = run_samples.last().map_or(0, |s| s.fds);
    println!(
        "fds        start {fds_start}, end of run {fds_end_run}, peak {fds_peak}, after clients closed {fds_after_close}"
    );
    println!(
        "data dir   {:.1} MiB; server exit {status}",
        db_bytes as f64 / 1_048_576.0
    );
    for e in &lost_examples {
        println!("  {e}");
    }

    if t.lost > 0 {
        failures.push(format!("{} messages lost", t.lost));
    }
    if dup > 0 {
        failures.push(format!("{dup} duplicates"));
    }
    if misordered > 0 {
        failures.push(format!("{misordered} misordered"));
    }
    if acked_not_stored > 0 {
        failures.push(format!(
            "{acked_not_stored} acked messages not in the store"
        ));
    }
    if !flat {
        failures.push(format!(
            "RSS grew {:.1} % after warm-up (threshold {} %)",
            (ratio - 1.0) * 100.0,
            p.rss_growth_pct
        ));
    }
    if third == 0 {
        failures.push(
            "too few samples in the run to judge RSS (run longer or sample more often)".into(),
        );
    }
    if not_settled > 0 {
        failures.push(format!(
            "{not_settled} clients ended with unacked sends or an unfinished catch-up"
        ));
    }
    if failures.is_empty() {
        println!("\nsoak: OK (0 lost, 0 duplicated, 0 misordered, RSS flat)");
    } else {
        println!("\nsoak: FAILED: {}", failures.join("; "));
        std::process::exit(1);
    }
}

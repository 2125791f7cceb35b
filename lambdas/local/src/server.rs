//! Assembles the local backend: opens the data directory, wires the SQLite stores, the in-process
//! topic and the gateway's sender into `chat-core`, and serves until shut down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use chat_core::cache::CachedRecipients;
use chat_core::ports::{Clock, ConnectionStore, MessageStore, MonotonicUlids, SystemClock};
use chat_core::{AuthConfig, ChatConfig, ChatService, Ports};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::gateway::{self, Gateway, GatewayLimits};
use crate::registry::{LocalSender, Registry};
use crate::secret::{self, SecretError};
use crate::sqlite::{OpenError, SqliteConnectionStore, SqliteMessageStore};
use crate::topic::LocalTopic;

/// Where and how the local backend runs.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// When the port is taken, try the next ones (up to this many) instead of failing.
    pub port_fallbacks: u16,
    pub data_dir: PathBuf,
    pub allow_anonymous: bool,
    pub chat: ChatConfig,
    pub limits: GatewayLimits,
    /// How often presence changes (online → idle → gone) are announced.
    pub presence_sweep: Duration,
}

impl LocalConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            port_fallbacks: 0,
            data_dir: data_dir.into(),
            allow_anonymous: false,
            chat: ChatConfig::default(),
            limits: GatewayLimits::default(),
            presence_sweep: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}; pass a writable --data-dir")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "another chatctl dev is using the data directory {path}; stop it or pass another --data-dir"
    )]
    Busy { path: PathBuf },
    #[error("cannot clear the connections of a previous run: {0}")]
    Clear(chat_core::ports::PortError),
    #[error("cannot listen on {addr}: {source}; {hint}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
}

/// Where messages and connections are kept.
pub enum Stores {
    /// SQLite files in the data directory.
    Sqlite,
    /// Stores built by the caller.
    Provided {
        messages: Arc<dyn MessageStore>,
        connections: Arc<dyn ConnectionStore>,
    },
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stores::Sqlite => "Stores::Sqlite",
            Stores::Provided { .. } => "Stores::Provided",
        })
    }
}

/// A running local backend.
#[derive(Debug)]
pub struct LocalServer {
    addr: SocketAddr,
    chat: Arc<ChatService>,
    registry: Arc<Registry>,
    topic: Arc<LocalTopic>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    /// Held while running: a second backend on the same data directory would clear this one's
    /// connections. The OS releases it when the process dies, however it dies.
    _lock: std::fs::File,
    /// `server.json` in the data directory, removed when the server stops.
    announcement: Option<std::path::PathBuf>,
}

pub const MESSAGES_DB: &str = "messages.db";
pub const CONNECTIONS_DB: &str = "connections.db";
/// Written to the data directory while a backend runs, so operator commands (`chatctl tail
/// --local` …) find its Management API: `{"url": "http://127.0.0.1:8080", "pid": 1234}`.
pub const SERVER_FILE: &str = "server.json";

/// What `server.json` says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerFile {
    /// The HTTP base URL: page, WebSocket (`ws://` of the same), Management API.
    pub url: String,
    pub pid: u32,
    /// The presence thresholds this backend runs with (`--online-within`, `--idle-within`), so
    /// `chatctl presence` judges members as the backend does.
    #[serde(default)]
    pub presence: Option<chat_core::policy::PresencePolicy>,
}

impl ServerFile {
    /// The running backend of `data_dir`, if its file is there and its process is alive.
    pub fn read(data_dir: &std::path::Path) -> Option<ServerFile> {
        let text = std::fs::read_to_string(data_dir.join(SERVER_FILE)).ok()?;
        let file: ServerFile = serde_json::from_str(&text).ok()?;
        // A file left by a killed process names a dead pid (Linux can tell; elsewhere trust it).
        let alive = !cfg!(target_os = "linux")
            || std::path::Path::new(&format!("/proc/{}", file.pid)).exists();
        alive.then_some(file)
    }
}

impl LocalServer {
    /// Start on the wall clock.
    pub async fn start(config: LocalConfig) -> Result<Self, StartError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Start with a given clock (tests move a manual clock to cross presence and recall limits).
    pub async fn start_with_clock(
        config: LocalConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        Self::start_with(config, clock, Stores::Sqlite).await
    }

    /// Start on the given stores: SQLite in the data directory, or stores the caller built
    /// (DynamoDB, say). Only SQLite's connections are cleared on start: provided stores may be
    /// shared, and their dead connections go on the first 410.
    pub async fn start_with(
        config: LocalConfig,
        clock: Arc<dyn Clock>,
        stores: Stores,
    ) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let lock = lock_data_dir(&config.data_dir)?;
        let (messages, connections): (Arc<dyn MessageStore>, Arc<dyn ConnectionStore>) =
            match stores {
                Stores::Sqlite => {
                    let messages = SqliteMessageStore::open(&config.data_dir.join(MESSAGES_DB))?;
                    let connections =
                        SqliteConnectionStore::open(&config.data_dir.join(CONNECTIONS_DB))?;
                    let stale = connections.clear().await.map_err(StartError::Clear)?;
                    if stale > 0 {
                        info!(count = stale, "cleared connections left by a previous run");
                    }
                    // This process owns the connections file (operator commands change it
                    // through the Management API or on 410s), so fan-out can keep each room's
                    // recipients between membership changes.
                    let connections: Arc<dyn ConnectionStore> = Arc::new(connections);
                    (
                        Arc::new(messages),
                        Arc::new(CachedRecipients::new(connections)),
                    )
                }
                Stores::Provided {
                    messages,
                    connections,
                } => (messages, connections),
            };
        let key = secret::load_or_create(&config.data_dir)?;

        let listener = bind(config.bind, config.port_fallbacks).await?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
            hint: "the socket has no local address",
        })?;

        let registry = Arc::new(Registry::default());
        let topic = Arc::new(LocalTopic::new(
            format!(
                "arn:aws:sns:local:000000000000:chatctl-local-events-{}",
                addr.port()
            ),
            Arc::clone(&clock),
        ));
        let ports = Ports {
            messages,
            connections,
            topic: Arc::clone(&topic) as Arc<dyn chat_core::ports::Topic>,
            sender: Arc::new(LocalSender {
                registry: Arc::clone(&registry),
                max_bytes: config.limits.max_message_bytes,
            }),
            clock: Arc::clone(&clock),
            ids: Arc::new(MonotonicUlids::default()),
        };
        let auth = AuthConfig {
            key: Some(key),
            allow_anonymous: config.allow_anonymous,
        };
        let recall_window_ms = config.chat.recall_window_ms;
        let chat = Arc::new(ChatService::new(ports, config.chat.clone(), auth));

        topic.start(Arc::clone(&chat));
        let background = vec![tokio::spawn(sweep_presence(
            Arc::clone(&chat),
            Arc::clone(&clock),
            config.presence_sweep,
        ))];

        let gw = Arc::new(Gateway {
            chat: Arc::clone(&chat),
            clock,
            registry: Arc::clone(&registry),
            limits: config.limits,
            api_id: "local".to_owned(),
            allow_anonymous: config.allow_anonymous,
            recall_window_ms,
            public_addr: addr,
        });
        let app = gateway::router(gw).into_make_service_with_connect_info::<SocketAddr>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        // Chat frames are small and latency-bound: without TCP_NODELAY, Nagle's algorithm and
        // delayed ACKs add ~40 ms to a reply.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                warn!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "server stopped with an error");
            }
        });
        info!(%addr, data_dir = %config.data_dir.display(), "local chat backend listening");
        if !addr.ip().is_loopback() {
            warn!(%addr, "listening beyond this machine: the Management API (/@connections) has no authentication; anyone who can reach this address can post to and close connections");
        }
        let mut server = Self {
            addr,
            chat,
            registry,
            topic,
            shutdown: Some(shutdown_tx),
            task,
            background,
            _lock: lock,
            announcement: None,
        };
        let path = config.data_dir.join(SERVER_FILE);
        let file = ServerFile {
            url: server.management_url(),
            pid: std::process::id(),
            presence: Some(config.chat.presence),
        };
        // Only operator commands read it; a failure to write it must not stop the chat.
        match serde_json::to_string(&file).map(|text| std::fs::write(&path, text)) {
            Ok(Ok(())) => server.announcement = Some(path),
            Ok(Err(e)) => warn!(path = %path.display(), error = %e, "cannot write server.json"),
            Err(e) => warn!(error = %e, "cannot encode server.json"),
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address to print: a wildcard bind (0.0.0.0) is reached as loopback from here.
    fn display_addr(&self) -> SocketAddr {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        addr
    }

    /// The WebSocket URL clients connect to (add `?room=…&token=…`).
    pub fn websocket_url(&self) -> String {
        format!("ws://{}/", self.display_addr())
    }

    /// The web chat page.
    pub fn page_url(&self) -> String {
        format!("http://{}/", self.display_addr())
    }

    /// The Management API endpoint (`POST/GET/DELETE {endpoint}/@connections/{id}`).
    pub fn management_url(&self) -> String {
        format!("http://{}", self.display_addr())
    }

    pub fn chat(&self) -> &Arc<ChatService> {
        &self.chat
    }

    pub fn open_connections(&self) -> usize {
        self.registry.len()
    }

    /// Close every socket (each runs `$disconnect`), then stop serving.
    pub async fn shutdown(mut self) {
        self.registry
            .close_all(gateway::close::GOING_AWAY, "server shutting down");
        // Sockets close within moments; a client that never answers is not waited for long.
        for _ in 0..50 {
            if self.registry.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        for task in &self.background {
            task.abort();
        }
        self.topic.stop();
        if let Some(path) = self.announcement.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::DataDir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Busy {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StartError::DataDir { path, source }),
    }
}

async fn bind(addr: SocketAddr, fallbacks: u16) -> Result<TcpListener, StartError> {
    let mut candidate = addr;
    loop {
        match TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && candidate.port() != 0
                    && candidate.port() - addr.port() < fallbacks
                    && candidate.port() < u16::MAX =>
            {
                candidate.set_port(candidate.port() + 1);
            }
            Err(source) => {
                let hint = if source.kind() == std::io::ErrorKind::AddrInUse {
                    "another program uses this port; pass another --port (0 picks a free one)"
                } else {
                    "check the address and your permissions"
                };
                return Err(StartError::Bind {
                    addr: candidate,
                    source,
                    hint,
                });
            }
        }
    }
}

async fn sweep_presence(chat: Arc<ChatService>, clock: Arc<dyn Clock>, every: Duration) {
    let mut since = clock.now_ms();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = clock.now_ms();
        if now <= since {
            continue;
        }
        // On failure `since` stays, so the next sweep covers the missed transitions too.
        match chat.sweep_presence(since, now).await {
            Ok(_) => since = now,
            Err(e) => warn!(error = %e, "presence sweep failed"),
        }
    }
}

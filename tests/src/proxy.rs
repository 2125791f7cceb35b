//! A recording, fault-injecting HTTP proxy in front of the moto server. moto is shared by every
//! test of a binary, so its own request log cannot tell which calls one `chatctl` run made; a proxy
//! per test can. Point the run (`--endpoint-url`) or an SDK client ([`sdk_config_for`]) at
//! [`AwsProxy::endpoint`]: every call is forwarded unchanged and recorded with its SigV4 service and
//! operation, and [`Fault`] rules fail, lose or hold chosen calls so a test can interrupt a deploy
//! at an exact point.
//!
//! The proxy runs on its own OS thread with its own tokio runtime, so it keeps answering while a
//! test blocks on `std::process::Command::output()` or between the runtimes of `#[tokio::test]`s.

use std::fmt;
use std::future::IntoFuture;
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{oneshot, watch};

use crate::latency::{Latency, Model};

/// The largest request body the proxy reads: Lambda's `CreateFunction` carries the zip, base64'd,
/// in its JSON body, and a release build of a handler is tens of megabytes.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// SDK configuration for an emulator at `endpoint` (the proxy's or moto's own): the same fixed test
/// credentials and region as [`crate::moto::Moto::sdk_config`].
pub fn sdk_config_for(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "moto",
        )))
        .build()
}

/// One AWS call that went through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The service of the SigV4 credential scope: `dynamodb`, `sns`, `ssm`, `logs`, `iam`, `sts`,
    /// `lambda`, `apigateway`, … (empty for an unsigned call).
    pub service: String,
    /// The API operation, e.g. `CreateTable`, `CreateTopic`, `UpdateFunctionCode`, `CreateApi`; a
    /// REST call the proxy has no name for is `"{METHOD} {path}"` (see [`rest_operation`]).
    pub operation: String,
    /// The request body as lossy UTF-8, so a test can tell which resource a call touched.
    pub body: String,
    /// The path and query: for REST APIs the resource is named here rather than in the body.
    pub path: String,
    /// The status the client got; 0 while the call has no answer yet (held, still in flight, or
    /// its client went away before the answer).
    pub status: u16,
}

impl Call {
    /// Whether the call can change something: every operation except the reads, which are
    /// `Get*`, `List*` and `Describe*` (sts `GetCallerIdentity` among them), DynamoDB's `Query`,
    /// `Scan` and `BatchGetItem`, and an unnamed REST call made with GET or HEAD.
    pub fn mutating(&self) -> bool {
        let op = self.operation.as_str();
        let read = ["Get", "List", "Describe", "BatchGet", "GET ", "HEAD "]
            .iter()
            .any(|prefix| op.starts_with(prefix))
            || op == "Query"
            || op == "Scan";
        !read
    }

    /// Whether the call is `operation` (or starts with it, for an `operation` ending in `*`, as
    /// in `"PUT /2019-09-25/functions/*"` for a REST call the proxy has no name for) and
    /// mentions `needle` in its body or path.
    fn matches(&self, operation: &str, needle: Option<&str>) -> bool {
        let named = match operation.strip_suffix('*') {
            Some(prefix) => self.operation.starts_with(prefix),
            None => self.operation == operation,
        };
        named && needle.is_none_or(|n| mentions(&self.body, &self.path, n))
    }
}

/// Whether `needle` occurs in the body or path, as sent or percent-decoded (an ARN in a form body
/// or a URL path arrives as `arn%3Aaws%3A…`).
fn mentions(body: &str, path: &str, needle: &str) -> bool {
    [body, path]
        .iter()
        .any(|text| text.contains(needle) || percent_decode(text).contains(needle))
}

/// A rule that makes the proxy misbehave for matching calls. Rules are checked in the order they
/// were injected; the first one that matches (and is not used up) decides.
#[derive(Debug, Clone)]
pub struct Fault {
    operation: String,
    needle: Option<String>,
    /// How many more calls the rule applies to; `None` is every time.
    remaining: Option<usize>,
    action: Action,
}

#[derive(Debug, Clone)]
enum Action {
    Fail,
    FailAfterForward,
    Hold(Gate),
    HoldAfterForward(Gate),
}

impl Fault {
    fn new(operation: &str, needle: Option<&str>, times: Option<usize>, action: Action) -> Fault {
        Fault {
            operation: operation.to_owned(),
            needle: needle.map(str::to_owned),
            remaining: times,
            action,
        }
    }

    /// Answer 500 with an `InternalFailure` error in the call's protocol WITHOUT forwarding, for
    /// calls of `operation` whose body or path contains `needle` (`None`: any). `times: None` is
    /// every time; `Some(n)` the next `n` matching calls. The SDK treats the answer as transient
    /// and retries it: each attempt is a call of its own.
    pub fn fail(operation: &str, needle: Option<&str>, times: Option<usize>) -> Fault {
        Fault::new(operation, needle, times, Action::Fail)
    }

    /// Forward to moto (so the change happens) and then answer 500 to the client instead of
    /// moto's answer: a response lost on the way back. A retrying client repeats the change.
    pub fn fail_after_forward(
        operation: &str,
        needle: Option<&str>,
        times: Option<usize>,
    ) -> Fault {
        Fault::new(operation, needle, times, Action::FailAfterForward)
    }

    /// Hold matching calls, not yet forwarded, until the gate is released; after that they (and
    /// later matching calls) go through. Returns the fault to [`AwsProxy::inject`] and its gate.
    pub fn hold(operation: &str, needle: Option<&str>) -> (Fault, Gate) {
        let gate = Gate::new();
        (
            Fault::new(operation, needle, None, Action::Hold(gate.clone())),
            gate,
        )
    }

    /// Forward matching calls (the change happens) and hold their answers until the gate is
    /// released: a client killed meanwhile never learns that its call succeeded.
    pub fn hold_after_forward(operation: &str, needle: Option<&str>) -> (Fault, Gate) {
        let gate = Gate::new();
        (
            Fault::new(
                operation,
                needle,
                None,
                Action::HoldAfterForward(gate.clone()),
            ),
            gate,
        )
    }
}

/// The gate of a [`Fault::hold`]: tells a test when a call is held and lets held calls through.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    /// How many calls have reached the gate, ever (released or not).
    reached: Mutex<usize>,
    arrived: Condvar,
    open: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            inner: Arc::new(GateInner {
                reached: Mutex::new(0),
                arrived: Condvar::new(),
                open: watch::Sender::new(false),
            }),
        }
    }

    /// Block (std, not async: call it from sync code or `spawn_blocking`) until a call has reached
    /// the gate or `timeout` passes; true if one has. A call that already passed still counts.
    pub fn wait_reached(&self, timeout: Duration) -> bool {
        let reached = lock(&self.inner.reached);
        let (reached, _) = self
            .inner
            .arrived
            .wait_timeout_while(reached, timeout, |n| *n == 0)
            .unwrap_or_else(PoisonError::into_inner);
        *reached > 0
    }

    /// Let held calls, and every later matching one, through to moto.
    pub fn release(&self) {
        self.inner.open.send_replace(true);
    }

    /// Wait here until the gate is released.
    async fn pass(&self) {
        let mut open = self.inner.open.subscribe();
        *lock(&self.inner.reached) += 1;
        self.inner.arrived.notify_all();
        // The sender lives in `inner`, which `self` keeps alive: this cannot fail.
        let _ = open.wait_for(|open| *open).await;
    }
}

/// Seeded faults on a share of every call, for fault matrices: each call is drawn by a hash of
/// the seed, the call (its operation, path and body with digits removed, so timestamps and pids
/// do not count) and how many identical calls came before it. A run with the same seed meets the
/// same faults, up to the order of concurrent identical calls; a retry of a call is a new draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chaos {
    pub seed: u64,
    /// Share of calls that meet a fault, in percent.
    pub percent: u8,
}

/// What a [`Chaos`] fault did to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChaosFault {
    /// Refused with the protocol's throttling error (429 `TooManyRequestsException` on REST
    /// APIs, 400 `ThrottlingException`/`Throttling` elsewhere), not forwarded.
    Throttle,
    /// Answered 500 `InternalFailure`, not forwarded.
    ServerError,
    /// Forwarded (the change happens), then answered 503 `ServiceUnavailable`: a lost answer.
    LostAnswer,
}

#[derive(Debug, Default)]
struct ChaosState {
    chaos: Option<Chaos>,
    seen: std::collections::HashMap<u64, u64>,
    injected: std::collections::BTreeMap<ChaosFault, u64>,
}

impl ChaosState {
    fn draw(&mut self, call: &Call) -> Option<ChaosFault> {
        use std::hash::{Hash, Hasher};
        let chaos = self.chaos?;
        let mut identity = std::collections::hash_map::DefaultHasher::new();
        call.operation.hash(&mut identity);
        for text in [&call.path, &call.body] {
            text.chars()
                .filter(|c| !c.is_ascii_digit())
                .for_each(|c| c.hash(&mut identity));
        }
        let identity = identity.finish();
        let occurrence = self.seen.entry(identity).or_default();
        *occurrence += 1;
        // SplitMix64 of (seed, identity, occurrence): independent draws, no RNG state to share.
        let mut x = chaos
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(identity)
            .wrapping_add(occurrence.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        if x % 100 >= u64::from(chaos.percent) {
            return None;
        }
        let fault = match (x / 100) % 3 {
            0 => ChaosFault::Throttle,
            1 => ChaosFault::ServerError,
            _ => ChaosFault::LostAnswer,
        };
        *self.injected.entry(fault).or_default() += 1;
        Some(fault)
    }
}

/// The record and the rules, shared by the test's handle and the proxy's thread.
#[derive(Debug, Default)]
struct Control {
    record: Mutex<Record>,
    rules: Mutex<Vec<Fault>>,
    latency: Mutex<Option<Arc<Model>>>,
    chaos: Mutex<ChaosState>,
}

#[derive(Debug, Default)]
struct Record {
    next: u64,
    /// Calls in arrival order, each with the number its answer is filed under.
    calls: Vec<(u64, Instant, Call)>,
}

impl Control {
    fn arrived(&self, call: Call) -> u64 {
        let mut record = lock(&self.record);
        let id = record.next;
        record.next += 1;
        record.calls.push((id, Instant::now(), call));
        id
    }

    /// File the status of call `id`, unless the record was taken meanwhile.
    fn answered(&self, id: u64, status: u16) {
        let mut record = lock(&self.record);
        if let Some((_, _, call)) = record.calls.iter_mut().rev().find(|(i, _, _)| *i == id) {
            call.status = status;
        }
    }

    /// The action of the first live rule matching `call`, using up one of its times.
    fn decide(&self, call: &Call) -> Option<Action> {
        let mut rules = lock(&self.rules);
        for rule in rules.iter_mut() {
            if !call.matches(&rule.operation, rule.needle.as_deref()) {
                continue;
            }
            match &mut rule.remaining {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            return Some(rule.action.clone());
        }
        None
    }

    fn clear_faults(&self) {
        for rule in lock(&self.rules).drain(..) {
            if let Action::Hold(gate) | Action::HoldAfterForward(gate) = rule.action {
                gate.release();
            }
        }
    }
}

/// A panicking test thread must not take the proxy down with it: a poisoned lock's data is fine.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A recording, fault-injecting proxy in front of an AWS emulator, serving until dropped.
pub struct AwsProxy {
    /// Where clients go instead of the emulator: `http://127.0.0.1:PORT`.
    pub endpoint: String,
    control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for AwsProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsProxy")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsProxy {
    /// Start a proxy on 127.0.0.1 forwarding to `upstream` (e.g. moto's endpoint,
    /// `http://127.0.0.1:PORT`, plain HTTP/1.1).
    pub fn start(upstream: &str) -> AwsProxy {
        // Bound here, not on the proxy's thread, so the port is known before `start` returns.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
        let endpoint = format!(
            "http://{}",
            listener.local_addr().expect("the proxy's address")
        );
        listener
            .set_nonblocking(true)
            .expect("a non-blocking proxy socket");
        let control = Arc::new(Control::default());
        let (stop, stopped) = oneshot::channel();
        let forward = Forward {
            upstream: upstream.trim_end_matches('/').to_owned(),
            control: control.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let thread = std::thread::Builder::new()
            .name("aws-proxy".into())
            .spawn(move || serve(listener, forward, stopped))
            .expect("start the proxy's thread");
        AwsProxy {
            endpoint,
            control,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// SDK configuration pointed at this proxy (see [`sdk_config_for`]).
    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint)
    }

    /// Every call recorded so far, in arrival order, and clears the record. A call still without
    /// an answer is returned with status 0 and is not returned again when it is answered.
    pub fn take_calls(&self) -> Vec<Call> {
        self.take_timed_calls()
            .into_iter()
            .map(|(_, call)| call)
            .collect()
    }

    /// Like [`AwsProxy::take_calls`], with when each call reached the proxy (after the latency
    /// model's round trip, which is the same for every call of a service).
    pub fn take_timed_calls(&self) -> Vec<(Instant, Call)> {
        std::mem::take(&mut lock(&self.control.record).calls)
            .into_iter()
            .map(|(_, at, call)| (at, call))
            .collect()
    }

    /// Inject a fault for the calls the rule matches (rules are checked in order; first match
    /// wins).
    pub fn inject(&self, rule: Fault) {
        lock(&self.control.rules).push(rule);
    }

    /// Remove every fault rule (and release any held requests).
    pub fn clear_faults(&self) {
        self.control.clear_faults();
    }

    /// Meet a seeded share of the calls from now on with faults (`None`: stop). Explicit
    /// [`Fault`] rules still come first.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        lock(&self.control.chaos).chaos = chaos;
    }

    /// How many faults of each kind [`AwsProxy::set_chaos`] injected so far.
    pub fn chaos_injected(&self) -> std::collections::BTreeMap<ChaosFault, u64> {
        lock(&self.control.chaos).injected.clone()
    }

    /// Make the calls from now on take as long, and resources become ready as late, as on AWS
    /// (see [`crate::latency`]); faults still apply on top.
    pub fn set_latency(&self, latency: Latency) {
        *lock(&self.control.latency) = Some(Arc::new(Model::new(latency)));
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.clear_faults();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The proxy's thread: serve until told to stop, then drop the runtime and every connection.
fn serve(listener: TcpListener, forward: Forward, stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the proxy's runtime");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("the proxy's socket on tokio");
        let app = Router::new().fallback(handle).with_state(Arc::new(forward));
        tokio::select! {
            served = axum::serve(listener, app).into_future() => {
                if let Err(e) = served {
                    eprintln!("the AWS proxy stopped serving: {e}");
                }
            }
            _ = stopped => {}
        }
    });
}

/// What the request handler needs: where to forward, and what to record and inject.
#[derive(Debug)]
struct Forward {
    upstream: String,
    control: Arc<Control>,
    client: Client<HttpConnector, Full<Bytes>>,
}

async fn handle(State(forward): State<Arc<Forward>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("reading the request: {e}")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    // moto's own control API is the test harness talking, not the code under test.
    if parts.uri.path().starts_with("/moto-api") {
        return forward.send(&parts, &path, body).await;
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let protocol = Protocol::of(&parts.headers, &text);
    let call = Call {
        service: service_of(&parts.headers),
        operation: operation_of(&protocol, parts.method.as_str(), &parts.uri),
        body: text,
        path: path.clone(),
        status: 0,
    };
    let model = lock(&forward.control.latency).clone();
    let refusal = model.as_ref().and_then(|m| m.before(&call));
    // A refused call does not use up a fault rule.
    let action = match refusal {
        None => forward.control.decide(&call),
        Some(_) => None,
    };
    let chaos = match (&refusal, &action) {
        (None, None) => lock(&forward.control.chaos).draw(&call),
        _ => None,
    };
    let modelled = model.map(|m| (m, call.clone()));
    if let Some((m, call)) = &modelled {
        tokio::time::sleep(m.delay(call)).await;
    }
    let id = forward.control.arrived(call);
    let response = match (refusal, action) {
        // What AWS answers while something the call needs is not ready yet.
        (Some(r), _) => protocol.error(r.status, r.code, &r.message),
        (None, None) => match chaos {
            None => forward.send(&parts, &path, body).await,
            Some(ChaosFault::Throttle) => protocol.throttled(),
            Some(ChaosFault::ServerError) => protocol.injected_error(),
            Some(ChaosFault::LostAnswer) => {
                let _lost = forward.send(&parts, &path, body).await;
                protocol.error(503, "ServiceUnavailable", "injected after forwarding")
            }
        },
        (None, Some(Action::Fail)) => protocol.injected_error(),
        (None, Some(Action::FailAfterForward)) => {
            let _lost = forward.send(&parts, &path, body).await;
            protocol.injected_error()
        }
        (None, Some(Action::Hold(gate))) => {
            gate.pass().await;
            forward.send(&parts, &path, body).await
        }
        (None, Some(Action::HoldAfterForward(gate))) => {
            let answer = forward.send(&parts, &path, body).await;
            gate.pass().await;
            answer
        }
    };
    let response = match &modelled {
        Some((m, call)) => as_modelled(m, call, response).await,
        None => response,
    };
    // Filed before the client sees the answer, so a finished run's record is complete.
    forward.control.answered(id, response.status().as_u16());
    response
}

/// The answer as the latency model says AWS would give it now (a table still CREATING …).
async fn as_modelled(model: &Model, call: &Call, response: Response) -> Response {
    let (mut head, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return plain(StatusCode::BAD_GATEWAY, "reading moto's answer".to_owned());
    };
    let body = match model.after(call, head.status.as_u16(), &bytes) {
        Some(rewritten) => {
            head.headers.remove(CONTENT_LENGTH);
            Bytes::from(rewritten)
        }
        None => bytes,
    };
    Response::from_parts(head, Body::from(body))
}

/// Headers that describe one connection rather than the message; hyper sets its own.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        // The body is already read in full: there is nothing to continue.
        "expect",
    ]
    .contains(&name.as_str())
}

impl Forward {
    /// Send the request upstream unchanged (Host included) and return its answer, read in full.
    async fn send(&self, parts: &Parts, path: &str, body: Bytes) -> Response {
        let mut request = axum::http::Request::new(Full::new(body));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = match format!("{}{path}", self.upstream).parse() {
            Ok(uri) => uri,
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad path {path}: {e}")),
        };
        copy_headers(&parts.headers, request.headers_mut());
        let answer = match self.client.request(request).await {
            Ok(answer) => answer,
            Err(e) => {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("the proxy could not reach {}: {e:?}", self.upstream),
                );
            }
        };
        let (head, body) = answer.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("reading the answer of {}: {e}", self.upstream),
                );
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = head.status;
        copy_headers(&head.headers, response.headers_mut());
        response
    }
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

/// How a call names its operation, and so how an error answer to it must look.
#[derive(Debug)]
enum Protocol {
    /// awsJson (DynamoDB, CloudWatch Logs, SSM): `X-Amz-Target: Service_Version.Operation`.
    Json {
        target: String,
        content_type: String,
    },
    /// awsQuery (SNS, IAM, STS): a form body with `Action=Operation`.
    Query { action: String },
    /// restJson (Lambda, API Gateway): the operation is the method and path.
    Rest,
}

impl Protocol {
    fn of(headers: &HeaderMap, body: &str) -> Protocol {
        if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/x-amz-json-1.0")
                .to_owned();
            return Protocol::Json {
                target: target.to_owned(),
                content_type,
            };
        }
        let form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form && let Some(action) = form_value(body, "Action") {
            return Protocol::Query { action };
        }
        Protocol::Rest
    }

    /// A 500 the SDK parses as an `InternalFailure` service error (and classifies as transient).
    fn injected_error(&self) -> Response {
        self.error(
            500,
            "InternalFailure",
            "injected by the chatctl_e2e test proxy",
        )
    }

    /// The service's throttling answer, which the SDK classifies as throttling and backs off on.
    fn throttled(&self) -> Response {
        match self {
            Protocol::Rest => self.error(429, "TooManyRequestsException", "Rate exceeded"),
            Protocol::Query { .. } => self.error(400, "Throttling", "Rate exceeded"),
            Protocol::Json { .. } => self.error(400, "ThrottlingException", "Rate exceeded"),
        }
    }

    /// An error answer in the call's protocol, which the SDK parses as the service error `code`.
    fn error(&self, status: u16, code: &str, message: &str) -> Response {
        let message_json = serde_json::to_string(message).unwrap_or_default();
        let (content_type, body, error_type) = match self {
            Protocol::Json { content_type, .. } => (
                content_type.clone(),
                format!(r#"{{"__type":"{code}","message":{message_json}}}"#),
                None,
            ),
            Protocol::Query { .. } => (
                "text/xml".to_owned(),
                format!(
                    "<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code>\
                     <Message>{message}</Message></Error>\
                     <RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>",
                    if status >= 500 { "Receiver" } else { "Sender" }
                ),
                None,
            ),
            Protocol::Rest => (
                "application/json".to_owned(),
                format!(r#"{{"message":{message_json}}}"#),
                Some(code),
            ),
        };
        let mut response = plain(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        );
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(CONTENT_TYPE, value);
        }
        if let Some(value) = error_type.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert("x-amzn-errortype", value);
        }
        response
    }
}

/// The service of the SigV4 credential scope: `Credential=AKID/DATE/REGION/SERVICE/aws4_request`.
fn service_of(headers: &HeaderMap) -> String {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|credential| credential.split([',', ' ']).next())
        .and_then(|scope| scope.split('/').nth(3))
        .unwrap_or_default()
        .to_owned()
}

fn operation_of(protocol: &Protocol, method: &str, uri: &axum::http::Uri) -> String {
    match protocol {
        Protocol::Json { target, .. } => target.rsplit('.').next().unwrap_or(target).to_owned(),
        Protocol::Query { action } => action.clone(),
        Protocol::Rest => uri
            .query()
            .and_then(|q| form_value(q, "Action"))
            .or_else(|| rest_operation(method, uri.path()))
            .unwrap_or_else(|| format!("{method} {}", uri.path())),
    }
}

/// The operation of a REST call (Lambda, API Gateway v2, the API Gateway Management API) from its
/// method and path (without the query), or `None` for one the proxy has no name for (recorded as
/// `"{METHOD} {path}"`).
pub fn rest_operation(method: &str, path: &str) -> Option<String> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    lambda_operation(method, &segments)
        .or_else(|| apigatewayv2_operation(method, &segments))
        .or_else(|| management_operation(method, &segments))
}

fn lambda_operation(method: &str, segments: &[&str]) -> Option<String> {
    let op = match (method, segments) {
        ("GET", ["2015-03-31", "functions"]) => "ListFunctions",
        ("POST", ["2015-03-31", "functions"]) => "CreateFunction",
        ("GET", ["2015-03-31", "functions", _]) => "GetFunction",
        ("DELETE", ["2015-03-31", "functions", _]) => "DeleteFunction",
        ("PUT", ["2015-03-31", "functions", _, "code"]) => "UpdateFunctionCode",
        ("PUT", ["2015-03-31", "functions", _, "configuration"]) => "UpdateFunctionConfiguration",
        ("GET", ["2015-03-31", "functions", _, "configuration"]) => "GetFunctionConfiguration",
        ("POST", ["2015-03-31", "functions", _, "policy"]) => "AddPermission",
        ("GET", ["2015-03-31", "functions", _, "policy"]) => "GetPolicy",
        ("DELETE", ["2015-03-31", "functions", _, "policy", _]) => "RemovePermission",
        ("POST", ["2015-03-31", "functions", _, "invocations"]) => "Invoke",
        ("POST", ["2015-03-31", "functions", _, "versions"]) => "PublishVersion",
        ("GET", ["2015-03-31", "functions", _, "versions"]) => "ListVersionsByFunction",
        ("POST", ["2015-03-31", "functions", _, "aliases"]) => "CreateAlias",
        ("GET", ["2015-03-31", "functions", _, "aliases"]) => "ListAliases",
        ("GET", ["2015-03-31", "functions", _, "aliases", _]) => "GetAlias",
        ("PUT", ["2015-03-31", "functions", _, "aliases", _]) => "UpdateAlias",
        ("DELETE", ["2015-03-31", "functions", _, "aliases", _]) => "DeleteAlias",
        ("PUT", ["2017-10-31", "functions", _, "concurrency"]) => "PutFunctionConcurrency",
        ("DELETE", ["2017-10-31", "functions", _, "concurrency"]) => "DeleteFunctionConcurrency",
        ("GET", ["2019-09-30", "functions", _, "concurrency"]) => "GetFunctionConcurrency",
        ("POST", ["2021-10-31", "functions", _, "url"]) => "CreateFunctionUrlConfig",
        ("GET", ["2021-10-31", "functions", _, "url"]) => "GetFunctionUrlConfig",
        ("PUT", ["2021-10-31", "functions", _, "url"]) => "UpdateFunctionUrlConfig",
        ("DELETE", ["2021-10-31", "functions", _, "url"]) => "DeleteFunctionUrlConfig",
        // An ARN is one segment when percent-encoded, several if a client left its '/' raw.
        ("POST", ["2017-03-31", "tags", _, ..]) => "TagResource",
        ("DELETE", ["2017-03-31", "tags", _, ..]) => "UntagResource",
        ("GET", ["2017-03-31", "tags", _, ..]) => "ListTags",
        ("GET", ["2016-08-19", "account-settings"]) => "GetAccountSettings",
        _ => return None,
    };
    Some(op.to_owned())
}

/// The entity a collection of an API Gateway v2 API holds, as its operations name it.
fn apigatewayv2_entity(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "integrations" => "Integration",
        "integrationresponses" => "IntegrationResponse",
        "routes" => "Route",
        "routeresponses" => "RouteResponse",
        "stages" => "Stage",
        "deployments" => "Deployment",
        "authorizers" => "Authorizer",
        "models" => "Model",
        _ => return None,
    })
}

fn apigatewayv2_operation(method: &str, segments: &[&str]) -> Option<String> {
    let fixed = match (method, segments) {
        ("POST", ["v2", "apis"]) => Some("CreateApi"),
        ("GET", ["v2", "apis"]) => Some("GetApis"),
        ("GET", ["v2", "apis", _]) => Some("GetApi"),
        ("PATCH", ["v2", "apis", _]) => Some("UpdateApi"),
        ("DELETE", ["v2", "apis", _]) => Some("DeleteApi"),
        ("PUT", ["v2", "apis", _]) => Some("ReimportApi"),
        ("DELETE", ["v2", "apis", _, "cors"]) => Some("DeleteCorsConfiguration"),
        ("DELETE", ["v2", "apis", _, "stages", _, "accesslogsettings"]) => {
            Some("DeleteAccessLogSettings")
        }
        ("DELETE", ["v2", "apis", _, "stages", _, "routesettings", _]) => {
            Some("DeleteRouteSettings")
        }
        ("POST", ["v2", "tags", _, ..]) => Some("TagResource"),
        ("DELETE", ["v2", "tags", _, ..]) => Some("UntagResource"),
        ("GET", ["v2", "tags", _, ..]) => Some("GetTags"),
        _ => None,
    };
    if let Some(op) = fixed {
        return Some(op.to_owned());
    }
    // /v2/apis/{id}/{collection}[/{item}[/{collection}[/{item}]]]: the last collection names it.
    let ["v2", "apis", _, rest @ ..] = segments else {
        return None;
    };
    let (collection, item) = match rest {
        [c] | [_, _, c] => (*c, false),
        [c, _] | [_, _, c, _] => (*c, true),
        _ => return None,
    };
    let entity = apigatewayv2_entity(collection)?;
    let verb = match (method, item) {
        ("POST", false) => return Some(format!("Create{entity}")),
        ("GET", false) => return Some(format!("Get{entity}s")),
        ("GET", true) => "Get",
        ("PATCH", true) => "Update",
        ("DELETE", true) => "Delete",
        _ => return None,
    };
    Some(format!("{verb}{entity}"))
}

/// The API Gateway Management API: `/@connections/{id}`, behind a stage prefix on a real endpoint.
fn management_operation(method: &str, segments: &[&str]) -> Option<String> {
    let [.., "@connections" | "%40connections", _] = segments else {
        return None;
    };
    let op = match method {
        "POST" => "PostToConnection",
        "GET" => "GetConnection",
        "DELETE" => "DeleteConnection",
        _ => return None,
    };
    Some(op.to_owned())
}

/// The decoded value of `key` in a form (`a=1&b=2`).
pub(crate) fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// `%XX` escapes and form-style `+` decoded; anything malformed is kept as it is.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

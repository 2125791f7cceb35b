//! The moto server, AWS's APIs emulated on 127.0.0.1, started once per test binary. Tests isolate
//! themselves by unique resource names rather than resets, so they can run in parallel. moto is
//! required: a missing `moto_server` fails the test with the install hint, it never skips it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

/// moto's two Lambda backends: functions run in-process (the tests' default: there is no
/// Docker here), or the Docker-backed one that moto's CloudFormation writes to.
#[derive(Debug, Clone, Copy)]
enum Lambdas {
    InProcess,
    Docker,
}

#[derive(Debug)]
pub struct Moto {
    pub endpoint: String,
}

/// A pinned Python tool of `scripts/setup.sh` (`moto_server`, `cfn-lint`, its `python`): the
/// `env` override if set, else the tools venv (`$CHATCTL_TOOLS`, default
/// `~/.cache/chatctl/tools`), else whatever `PATH` finds.
pub fn tool(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let tools = std::env::var_os("CHATCTL_TOOLS")
        .map_or_else(|| home.join(".cache/chatctl/tools"), PathBuf::from);
    let venv = tools.join("bin").join(name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(name)
}

fn moto_binary() -> PathBuf {
    tool("moto_server", "MOTO_SERVER")
}

/// moto's server started from its own Python, with what the tests add to it first
/// (`tests/moto/chatctl_moto.py`: CloudFormation's `AWS::Lambda::Alias`).
const START_MOTO: &str = "import sys; sys.path.insert(0, sys.argv[1]); import chatctl_moto; \
     from moto.server import main; main(sys.argv[2:])";

/// The Python that runs `moto_server` (its shebang), so the additions load into the same moto.
fn moto_python(server: &Path) -> PathBuf {
    std::fs::read_to_string(server)
        .ok()
        .and_then(|text| {
            let first = text.lines().next()?.strip_prefix("#!")?.trim().to_owned();
            (!first.contains(' ')).then(|| PathBuf::from(first))
        })
        .unwrap_or_else(|| tool("python3", "MOTO_PYTHON"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Moto {
    /// The moto server of this test binary, started on first use.
    pub fn shared() -> &'static Moto {
        static MOTO: OnceLock<Moto> = OnceLock::new();
        MOTO.get_or_init(|| Moto::start(Lambdas::InProcess))
    }

    /// A second moto of this test binary for CloudFormation stacks. moto's CloudFormation creates
    /// `AWS::Lambda::Function`s in its Docker-backed Lambda backend, while with
    /// `use_docker: false` the Lambda API reads the in-process one, so a stack's functions would
    /// be invisible to `GetFunction`. Functions here are created and read, never invoked, so the
    /// Docker backend (there is no Docker) is never asked to run one.
    pub fn for_cloudformation() -> &'static Moto {
        static MOTO: OnceLock<Moto> = OnceLock::new();
        MOTO.get_or_init(|| Moto::start(Lambdas::Docker))
    }

    // The watchdog shell is deliberately never waited for: it outlives every test and exits with
    // the process, taking moto with it.
    #[allow(clippy::zombie_processes)]
    fn start(lambdas: Lambdas) -> Moto {
        let bin = moto_binary();
        let python = moto_python(&bin);
        let additions = Path::new(env!("CARGO_MANIFEST_DIR")).join("moto");
        let port = free_port();
        // The watchdog shell stops moto when this test process ends, however it ends.
        let script = format!(
            "\"$0\" -c \"$1\" \"$2\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & moto=$!; \
             while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $moto",
            parent = std::process::id()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&python)
            .arg(START_MOTO)
            .arg(&additions)
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .env("DOCKER_HOST", "unix:///nonexistent")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}; run scripts/setup.sh", bin.display())
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto { endpoint };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut refused = String::new();
        while Instant::now() < deadline {
            // Listening is not yet serving: under load moto can accept a connection and close it
            // unanswered while it starts, so the configuration is retried until it is taken.
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                match moto.configure(lambdas) {
                    Ok(()) => return moto,
                    Err(answer) => refused = answer,
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = child.stderr.take().map(|e| {
                    BufReader::new(e)
                        .lines()
                        .map_while(Result::ok)
                        .collect::<Vec<_>>()
                        .join("\n")
                });
                panic!(
                    "{} exited ({status}) before listening: {}; is moto installed? run scripts/setup.sh",
                    bin.display(),
                    err.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not listen on port {port} and take its configuration within 30 s (last answer: {refused:?})",
            bin.display()
        );
    }

    /// Where moto's Lambda backend keeps functions ([`Lambdas`]).
    fn configure(&self, lambdas: Lambdas) -> Result<(), String> {
        let body = match lambdas {
            Lambdas::InProcess => r#"{"lambda":{"use_docker":false}}"#,
            Lambdas::Docker => r#"{"lambda":{"use_docker":true}}"#,
        };
        let request = format!(
            "POST /moto-api/config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut stream, request.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
        let status = answer.split_whitespace().nth(1).unwrap_or_default();
        if status.starts_with('2') {
            Ok(())
        } else {
            Err(answer)
        }
    }

    /// SDK configuration for this emulator: fixed test credentials, us-east-1.
    pub fn sdk_config(&self) -> SdkConfig {
        crate::proxy::sdk_config_for(&self.endpoint)
    }
}

/// The backing of a fresh stage of `app`: both tables (created) and a topic, uniquely named.
pub async fn fresh_stage(config: &SdkConfig, app: &str) -> (chat_aws::TableNames, String) {
    let tables = chat_aws::TableNames::for_stage(app, &unique("s"));
    chat_aws::tables::ensure(&aws_sdk_dynamodb::Client::new(config), &tables)
        .await
        .expect("create the tables");
    let topic = aws_sdk_sns::Client::new(config)
        .create_topic()
        .name(unique("t"))
        .send()
        .await
        .expect("create topic")
        .topic_arn
        .expect("topic arn");
    (tables, topic)
}

/// A new SNS topic with an SQS queue subscribed to it: moto keeps published notifications nowhere
/// a client can read them, so tests read them from the queue (standard, not raw, delivery).
pub async fn topic_with_queue(config: &SdkConfig) -> (String, aws_sdk_sqs::Client, String) {
    let sns = aws_sdk_sns::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let topic_arn = sns
        .create_topic()
        .name(unique("events"))
        .send()
        .await
        .expect("create topic")
        .topic_arn
        .expect("topic arn");
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("q"))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue arn");
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .send()
        .await
        .expect("subscribe");
    (topic_arn, sqs, queue_url)
}

/// A name no other test uses: `{prefix}-{ulid}` in lower case.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

/// Deployable-looking zips for `chatctl plan`/`deploy` against moto (which runs no code): each
/// holds an aarch64 ELF header as `bootstrap`. `flavour` changes only the ws handler's bytes, so
/// a test can make a code-only change. Dated like cargo-lambda's: same content, same zip.
pub fn fake_artifacts(dir: &std::path::Path, flavour: &str) {
    fake_artifacts_of(dir, flavour, "");
}

/// Like [`fake_artifacts`], with a flavour for each zip: a change to shared code changes both.
pub fn fake_artifacts_of(dir: &std::path::Path, ws_flavour: &str, fanout_flavour: &str) {
    let script = r#"
import sys, zipfile, os
root = sys.argv[1]
flavours = {"chat-ws": sys.argv[2], "chat-fanout": sys.argv[3]}
for name in ["chat-ws", "chat-fanout"]:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    with zipfile.ZipFile(os.path.join(root, name, "bootstrap.zip"), "w") as z:
        body = (name + flavours[name]).encode() * 8
        info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o755 << 16
        z.writestr(info, b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\0\xb7\0" + body)
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .args([ws_flavour, fanout_flavour])
        .status()
        .expect("python3 runs");
    assert!(status.success(), "writing fake artifacts failed");
}

/// The SNS messages (`Message` of each notification) waiting in a queue subscribed with
/// [`topic_with_queue`]; one receive of up to 10, waiting up to a second.
pub async fn notifications(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive from the queue");
    out.messages()
        .iter()
        .filter_map(|m| m.body())
        .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .filter_map(|envelope| envelope["Message"].as_str().map(str::to_owned))
        .collect()
}

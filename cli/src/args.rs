//! The command-line surface: every flag's `///` comment is its `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "chatctl",
    version,
    about = "Build, deploy and operate a serverless real-time chat backend on AWS — or run it on this machine",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// How to print results: `text` for people, `json` for scripts (one JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text, env = "CHATCTL_OUTPUT")]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole chat backend on this machine: WebSocket gateway, storage, fan-out, web page.
    Dev(DevArgs),
    /// Mint a connection token for a user (the local secret, or a deployed stage's with --stage).
    Token(TokenArgs),
    /// Build the Lambda handlers (cargo-lambda, release) into deployable zips.
    Build(BuildArgs),
    /// Show what `deploy` would change in a stage (reads AWS, changes nothing).
    Plan(PlanArgs),
    /// Build, plan and apply a stage: create or update every resource it needs.
    Deploy(DeployArgs),
    /// Delete every resource of a stage, data included.
    Destroy(DestroyArgs),
    /// What is deployed for a stage and whether it matches the desired state (drift).
    Status(StatusArgs),
    /// A deployed stage's WebSocket URL, Management endpoint, table names and topic.
    Outputs(OutputsArgs),
    /// A stage's releases: which versions each deploy or rollback put live, when, by whom.
    Releases(ReleasesArgs),
    /// Move a stage's live aliases back to an earlier release (no build, nothing else).
    Rollback(RollbackArgs),
    /// Show a room's last messages, then new ones and recalls as they happen (Ctrl-C stops).
    Tail(TailArgs),
    /// Who is in a room: members merged per user, their connections, last seen, state.
    Presence(PresenceArgs),
    /// Withdraw any message as an operator (or show its version history with --show).
    Recall(RecallArgs),
    /// Post an announcement to a room as the operator, delivered like any message.
    Send(SendArgs),
    /// Close a connection through the Management API and remove it.
    Kick(KickArgs),
    /// Maintenance of the connection table.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Check a running backend end to end: two clients chat, page history, recall, disconnect.
    Smoke(SmokeArgs),
    /// Render a stage for another deploy tool (no AWS call, no build).
    #[command(subcommand)]
    Export(ExportCommand),
    /// Start a project here (or in DIR): chatctl.toml, a CI workflow, .gitignore lines.
    Init(InitArgs),
    /// Print a shell completion script, e.g. `chatctl completions bash > ~/.local/share/bash-completion/completions/chatctl`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project directory; created if missing.
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// The app name, part of every resource name ({app}-{stage}-…) [default: the directory's
    /// name if it is a valid app name, else "chat"].
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,

    /// Also copy the Lambda handlers' sources into DIR/handlers, so your team can change them;
    /// `chatctl build` then builds that copy. Existing project files are kept.
    #[arg(long)]
    pub eject: bool,

    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write chatctl.1 and a page per command (chatctl-deploy.1 …) into DIR instead of printing
    /// chatctl.1; e.g. `--out ~/.local/share/man/man1`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A CloudFormation template of a stage: the resources, names, keys and policies `deploy`
    /// creates, with parameters for where the zips are. The token secret (a SecureString, which
    /// CloudFormation cannot create) must exist first; the template's Metadata says how.
    Cloudformation(ExportArgs),
}

/// The template formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TemplateFormat {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The stage: part of every resource name ({app}-{stage}-…).
    #[arg(long, value_name = "NAME", env = "CHATCTL_STAGE")]
    pub stage: String,

    #[command(flatten)]
    pub project: ProjectArgs,

    /// Override one stage setting of chatctl.toml, e.g. `--set memory_mb=1024`. Repeat for several.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// Write the template to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// The template's format [default: from --out's extension (.json, .yaml, .yml), else yaml].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<TemplateFormat>,
}

/// Which app, and the project file with its settings.
#[derive(Debug, Clone, Args)]
pub struct ProjectArgs {
    /// The app name [default: `app` in chatctl.toml, else "chat"].
    #[arg(long, value_name = "NAME", env = "CHATCTL_APP")]
    pub app: Option<String>,

    /// The project file.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "chatctl.toml",
        env = "CHATCTL_CONFIG"
    )]
    pub config: PathBuf,
}

impl ProjectArgs {
    /// The project's directory: the one holding the project file.
    pub fn dir(&self) -> &std::path::Path {
        self.config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
    }
}

/// How to reach a stage's AWS account, and the project file with its settings.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    #[command(flatten)]
    pub project: ProjectArgs,

    /// AWS region [default: chatctl.toml, then AWS_REGION / the profile's].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// AWS profile [default: chatctl.toml, then AWS_PROFILE].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Send every AWS call here instead (an emulator such as moto).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

/// Which deployed stage a command works on, and how to reach its AWS account.
#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    /// The stage: part of every resource name ({app}-{stage}-…).
    #[arg(long, value_name = "NAME", env = "CHATCTL_STAGE")]
    pub stage: String,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// Override one stage setting of chatctl.toml, e.g. `--set memory_mb=1024` or
    /// `--set recall_window=5m`. Repeat for several.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: StageArgs,

    /// Compare the functions' code with the zips in DIR (from `chatctl build --out DIR`)
    /// [default: target/lambda-zips if it exists; without a build, code is taken as deployed].
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,

    /// Exit 0 when nothing would change, 2 when something would, 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub target: StageArgs,

    /// Deploy these zips (from `chatctl build --out DIR`) instead of building first.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,

    /// The workspace's Cargo.toml for the build, when not running inside the chatctl repository.
    #[arg(long, value_name = "PATH", conflicts_with = "artifacts")]
    pub manifest_path: Option<PathBuf>,

    /// Apply without asking. Required when not running from a terminal (CI).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Take the stage's deploy lock even if another run holds it. Only when that run is dead.
    #[arg(long)]
    pub break_lock: bool,

    /// Allow deleting and re-creating a DynamoDB table whose keys changed. Its data is lost.
    #[arg(long)]
    pub replace_tables: bool,

    /// Also write the outputs (WebSocket URL, endpoints, table names …) to this file as JSON.
    #[arg(long, value_name = "PATH")]
    pub outputs_file: Option<PathBuf>,

    /// Put new versions live even though the stage was rolled back. Without it, a deploy after
    /// `chatctl rollback` that would change what runs stops, so a re-run CI job cannot undo an
    /// incident's rollback by accident.
    #[arg(long)]
    pub roll_forward: bool,

    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// How deploy and destroy make their changes.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Run up to N changes at once, each after what it depends on (1: one after the other, in
    /// plan order). Progress is reported in plan order either way.
    #[arg(long, value_name = "N", default_value_t = chatctl_infra::apply::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,

    /// How to deploy: `direct` (the AWS APIs, planned and applied by chatctl) or
    /// `cloudformation` (a change set of `chatctl export cloudformation`'s template, for accounts
    /// where changes must go through CloudFormation). Use one engine per stage.
    #[arg(long, value_enum, default_value_t = Engine::Direct)]
    pub engine: Engine,
}

/// The deploy engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Direct,
    Cloudformation,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub target: StageArgs,

    /// Delete without asking. Required when not running from a terminal (CI).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Take the stage's deploy lock even if another run holds it. Only when that run is dead.
    #[arg(long)]
    pub break_lock: bool,

    #[command(flatten)]
    pub apply: ApplyArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: StageArgs,

    /// Compare the functions' code with these zips too [default: target/lambda-zips if present].
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,

    /// Exit 0 when the stage matches the desired state, 2 when it drifted, 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub target: StageArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: StageArgs,

    /// Go back to this release (a number from `chatctl releases`) [default: the release before
    /// the one live; after a rollback, the one before that].
    #[arg(long, value_name = "N")]
    pub to: Option<i64>,

    /// Move the aliases without asking. Required when not running from a terminal (CI).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Take the stage's deploy lock even if another run holds it. Only when that run is dead.
    #[arg(long)]
    pub break_lock: bool,
}

#[derive(Debug, Args)]
pub struct OutputsArgs {
    #[command(flatten)]
    pub target: StageArgs,
}

/// Which backend an operator command works on: the local instance (default) or a deployed stage.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Work on this deployed stage (AWS settings as for `deploy`) instead of the local instance.
    #[arg(
        long,
        value_name = "NAME",
        env = "CHATCTL_STAGE",
        conflicts_with = "local"
    )]
    pub stage: Option<String>,

    /// Work on the local instance: the running `chatctl dev` and its data directory (the default
    /// without --stage).
    #[arg(long)]
    pub local: bool,

    #[command(flatten)]
    pub data: DataDirArg,

    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The room to watch.
    pub room: String,

    /// How many of the last messages to show first.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
    pub lines: usize,

    /// Only messages from this long ago on, e.g. 10m or 2h (up to --lines … of them).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,

    /// Print the last messages and stop instead of following the room.
    #[arg(long)]
    pub no_follow: bool,

    /// How often to look for new messages and recalls [default: 250ms locally, 1s on AWS].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct PresenceArgs {
    /// The room.
    pub room: String,

    /// Print the members again every few seconds until Ctrl-C.
    #[arg(long)]
    pub watch: bool,

    /// How often --watch refreshes.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Show at most N members: the most recently seen ones, sorted by name, then a line saying
    /// how many were left out. The header always gives the full count. Text output shows 100
    /// unless told otherwise, so a room of thousands does not flood the terminal; --output json
    /// lists every member unless --limit is given (its `count` and `truncated` say what was cut).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,

    #[command(flatten)]
    pub target: TargetArgs,
}

/// How many members `chatctl presence` prints as text when `--limit` is not given.
pub const PRESENCE_TEXT_LIMIT: u32 = 100;

#[derive(Debug, Args)]
pub struct RecallArgs {
    /// The message id (from `tail` or the message's `id`).
    pub id: String,

    /// Why: recorded with the recall in the message's history.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Only show the message's versions (the audit trail); change nothing.
    #[arg(long, conflicts_with = "reason")]
    pub show: bool,

    /// The operator name recorded as having recalled it.
    #[arg(
        long = "as",
        value_name = "NAME",
        default_value = "operator",
        env = "CHATCTL_OPERATOR"
    )]
    pub operator: String,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The room.
    pub room: String,

    /// The announcement.
    #[arg(allow_hyphen_values = true)]
    pub text: String,

    /// The sender name members see.
    #[arg(
        long = "as",
        value_name = "NAME",
        default_value = "operator",
        env = "CHATCTL_OPERATOR"
    )]
    pub operator: String,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct KickArgs {
    /// The connection id (see `chatctl presence ROOM`).
    // Ids are random base64url and may start with `-`: taken as the id, not as a flag.
    #[arg(allow_hyphen_values = true)]
    pub connection_id: String,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Remove connections whose heartbeat stopped or that the Management API answers 410 for.
    Gc(GcArgs),
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// The room to chat in [default: a new `smoke-…` room each run].
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,

    /// How long each step may take.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildArch {
    Arm64,
    #[value(name = "x86-64")]
    X86_64,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// CPU architecture of the functions (Graviton arm64 is cheaper per request).
    #[arg(long, value_enum, default_value_t = BuildArch::Arm64)]
    pub arch: BuildArch,

    /// Where the zips go, one directory per handler [default: <workspace>/target/lambda-zips].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// The workspace's Cargo.toml, when not running inside the chatctl repository.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
}

/// Where local state lives; shared by `dev` and `token` so both use one secret.
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Directory for the message database, the connection table and the token secret.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".chatctl/dev",
        env = "CHATCTL_DATA_DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Port to listen on [default: 8080, or the next free one up to 8099]. 0 picks any free port.
    #[arg(long, short, value_name = "N", env = "CHATCTL_PORT")]
    pub port: Option<u16>,

    /// Address to listen on. The default keeps the backend private to this machine.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,

    #[command(flatten)]
    pub data: DataDirArg,

    /// Also accept `?room=ROOM&user=NAME` without a token (for trying things out; never on AWS).
    #[arg(long)]
    pub allow_anonymous: bool,

    /// How long senders may recall their own messages.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub recall_window: Duration,

    /// A member seen within this long is `online`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub online_within: Duration,

    /// A member seen within this long (but not online) is `idle`; after it, gone.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_within: Duration,

    /// Close connections that sent nothing for this long (API Gateway: 10m).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Close every connection after this long (API Gateway: 2h).
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub max_lifetime: Duration,

    /// Longest message text in bytes (at most the frame size).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub max_text: usize,

    /// Largest WebSocket frame in bytes; bigger ones close the connection with 1009 (API Gateway: 32 KB).
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024)]
    pub max_frame: usize,

    /// Largest (fragmented) WebSocket message in bytes; bigger ones close with 1009 (API Gateway: 128 KB).
    #[arg(long, value_name = "BYTES", default_value_t = 128 * 1024)]
    pub max_message: usize,

    /// Frames per second one connection may send before it gets `rate_limited` errors.
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    pub rate_per_second: f64,

    /// Frames one connection may send in a burst above the per-second rate.
    #[arg(long, value_name = "N", default_value_t = 40.0)]
    pub rate_burst: f64,

    /// How often presence changes (online → idle → left) are looked for and announced.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub presence_sweep: Duration,

    /// How long a room's presence changes are collected before they go out as one frame. A
    /// join storm then costs each member one frame per window instead of one per joiner.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub presence_window: Duration,

    /// Rooms with more members than this push member counts (`occupancy` frames) instead of
    /// who joined and left; `presence` still lists the members.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub presence_detail_limit: usize,

    /// Where messages and connections are kept: SQLite in --data-dir, or DynamoDB tables
    /// (created if missing) reached with the usual AWS settings, e.g. an emulator's endpoint.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,

    /// DynamoDB endpoint for `--store dynamodb`, e.g. http://127.0.0.1:5000 for moto
    /// [default: AWS_ENDPOINT_URL, else AWS itself].
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint: Option<String>,

    /// AWS region for `--store dynamodb` [default: AWS_REGION or the profile's].
    #[arg(long, value_name = "REGION")]
    pub aws_region: Option<String>,

    /// Table name prefix for `--store dynamodb`: tables PREFIX-messages and PREFIX-connections.
    #[arg(long, value_name = "PREFIX", default_value = "chatctl-dev")]
    pub table_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Dynamodb,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user name the token speaks for (1-64 printable characters).
    #[arg(long, short, value_name = "NAME")]
    pub user: String,

    /// Limit the token to this room; repeat for several. Without it the token opens any room.
    #[arg(long, short, value_name = "ROOM")]
    pub room: Vec<String>,

    /// How long the token is valid, e.g. 30m, 1h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,

    /// Mint an operator token: may recall any message at any time.
    #[arg(long)]
    pub operator: bool,

    /// Sign with the secret of this deployed stage (read from SSM) instead of the local one.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Durations like `90s`, `2m`, `1h 30m`.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw)
        .map_err(|e| format!("{e}; write a duration like 90s, 2m or 1h"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    // Timers and tokens work in milliseconds and seconds; a year is past any sensible limit.
    if d > Duration::from_secs(366 * 24 * 3600) {
        return Err("must be at most a year".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("90").unwrap_err().contains("like 90s"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn values_that_start_with_a_hyphen_are_values() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["chatctl", "kick", "-F3xQ_9aBcDeFgHi", "--local"]).unwrap();
        let Command::Kick(kick) = cli.command else {
            panic!("not kick")
        };
        assert_eq!(kick.connection_id, "-F3xQ_9aBcDeFgHi");
        assert!(kick.target.local);
        let cli = Cli::try_parse_from(["chatctl", "send", "lobby", "-1 for the outage"]).unwrap();
        let Command::Send(send) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.text, "-1 for the outage");
    }
}

//! No command prints a secret: every command that works on a stage runs against one whose token
//! secret (read straight from moto) and AWS credentials (made distinctive here) are known, in
//! text and in JSON, succeeding or failing, and its whole output is searched for them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

use super::{Stage, ok};

/// Credentials no real account has, long and distinctive enough that any echo of them shows.
const ACCESS_KEY_ID: &str = "AKIACHATCTLNEVERPRINT";
const SECRET_ACCESS_KEY: &str = "chatctlSecretAccessKeyThatMustNeverBePrinted0";
const SESSION_TOKEN: &str = "chatctlSessionTokenThatMustNeverBePrinted0123456789";

/// Every spelling of the token secret a careless print could produce: the SSM value (hex), its
/// upper-case form, and the raw bytes in each base64 alphabet.
fn spellings(secret_hex: &str) -> Vec<String> {
    let bytes: Vec<u8> = (0..secret_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes.len(), 32, "the secret is 32 bytes: {secret_hex}");
    vec![
        secret_hex.to_owned(),
        secret_hex.to_uppercase(),
        STANDARD.encode(&bytes),
        URL_SAFE.encode(&bytes),
        URL_SAFE_NO_PAD.encode(&bytes),
        // Half of it is still a leak.
        secret_hex[..32].to_owned(),
        secret_hex[32..].to_owned(),
    ]
}

#[tokio::test]
async fn no_command_prints_the_token_secret_or_the_aws_credentials() {
    let s = Stage::new();
    let run = |args: &[&str]| {
        s.command(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
            // Debug logging is where a secret would slip out first.
            .env("RUST_LOG", "debug")
            .output()
            .unwrap()
    };
    let dir = s.artifacts.path().to_str().unwrap().to_owned();
    let deployed = run(&["deploy", "--yes", "--output", "json", "--artifacts", &dir]);
    ok(&deployed);
    let secret = aws_sdk_ssm::Client::new(&s.moto)
        .get_parameter()
        .name(format!("/chatctl/chat/{}/token-secret", s.name))
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap()
        .value
        .unwrap();
    let mut forbidden = spellings(&secret);
    forbidden.extend([
        SECRET_ACCESS_KEY.to_owned(),
        SESSION_TOKEN.to_owned(),
        ACCESS_KEY_ID.to_owned(),
    ]);

    // The token command did print a token, signed with the secret it must not show.
    let token = run(&["token", "--user", "ann"]);
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let key =
        chat_core::token::TokenKey::new(chat_core::token::decode_hex(&secret).unwrap()).unwrap();
    assert_eq!(
        key.verify(&token, 0).map(|c| c.sub.to_string()).ok(),
        Some("ann".to_owned()),
        "{token}"
    );
    // Every stage command, as an operator would run them; some fail against moto (it serves
    // no Management API), and their errors are searched too.
    let commands: Vec<Vec<&str>> = vec![
        vec!["deploy", "--yes", "--artifacts", &dir],
        vec![
            "deploy",
            "--yes",
            "--artifacts",
            &dir,
            "--set",
            "memory_mb=not-a-number",
        ],
        vec!["plan", "--artifacts", &dir],
        vec!["plan", "--detailed-exitcode"],
        vec!["status"],
        vec!["outputs"],
        vec!["releases"],
        vec!["rollback", "--yes"],
        vec!["token", "--user", "ann", "--ttl", "5m"],
        vec!["token", "--user", "ops", "--operator", "--room", "lobby"],
        vec!["tail", "lobby", "--no-follow"],
        vec!["presence", "lobby"],
        vec!["recall", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--show"],
        vec!["recall", "not-an-id"],
        vec!["send", "lobby", "maintenance at noon"],
        vec!["kick", "AAAAAAAAAAAAAAAA"],
        vec!["connections", "gc", "--dry-run"],
        vec!["destroy", "--yes"],
        vec!["status"],
    ];
    let mut runs = 0;
    let mut scanned = 0;
    for command in &commands {
        for json in [false, true] {
            let mut args = command.clone();
            if json {
                args.extend(["--output", "json"]);
            }
            let out = run(&args);
            runs += 1;
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            scanned += text.len();
            for secret in &forbidden {
                assert!(
                    !text.contains(secret.as_str()),
                    "`chatctl {}` printed a secret ({}…):\n{text}",
                    args.join(" "),
                    &secret[..6]
                );
            }
        }
    }
    // Not vacuous: the runs printed reports, errors and debug logs (an empty room's `tail` may
    // print nothing at all).
    assert!(scanned > 10_000, "only {scanned} bytes of output");
    eprintln!(
        "secret scan: {runs} command runs, {scanned} bytes of output, {} secrets",
        forbidden.len()
    );
}

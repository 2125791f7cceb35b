//! Rendering results: `Display` for people, `Serialize` for `--output json` (one object per line).

use std::fmt::Display;
use std::io::Write;

use serde::Serialize;

use crate::args::OutputFormat;
use crate::error::CliError;

/// Print a command result on stdout in the chosen format.
pub fn emit<T: Display + Serialize>(format: OutputFormat, value: &T) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`chatctl … | head`) is not worth a panic or an error.
    let _ = match format {
        OutputFormat::Text => writeln!(out, "{value}"),
        OutputFormat::Json => serde_json::to_writer(&mut out, value)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
    };
    let _ = out.flush();
}

/// Print a document (a template) on stdout as it is.
pub fn raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Print one JSON object as a line on stdout: NDJSON events of long commands (deploy, destroy).
pub fn json_line<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value)
        .map_err(std::io::Error::other)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    event: &'static str,
    kind: &'a str,
    message: String,
}

/// Print an error on stderr; as JSON when JSON was asked for, so scripts can parse both streams.
pub fn error(format: OutputFormat, err: &CliError) {
    match format {
        OutputFormat::Text => eprintln!("error: {err}"),
        OutputFormat::Json => {
            let line = ErrorJson {
                event: "error",
                kind: err.kind(),
                message: err.to_string(),
            };
            eprintln!("{}", serde_json::to_string(&line).unwrap_or_default());
        }
    }
}

//! Rendering results: `Display` for people, `Serialize` for `--output json` (one object per line).
//!
//! Errors are rendered here too, in one place, in the style of uv and just:
//!
//! ```text
//! error: <what went wrong, one line>
//!   caused by: <source 1>
//!   caused by: <source 2>
//! hint: <what to do: the flag, the file, the fix>
//! ```
//!
//! The causes are the error's [`std::error::Error::source`] chain; the hint is
//! [`CliError::hint`]. As JSON the same parts are fields of one object on stderr:
//! `{"event":"error","kind":…,"message":…,"hint":…|null,"causes":[…]}`.

use std::fmt::{self, Display};
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

/// Print an error on stderr; as JSON when JSON was asked for, so scripts can parse both streams.
pub fn error(format: OutputFormat, err: &CliError) {
    let report = Report::new(err);
    match format {
        OutputFormat::Text => eprintln!("{report}"),
        OutputFormat::Json => {
            eprintln!("{}", serde_json::to_string(&report).unwrap_or_default());
        }
    }
}

/// An error taken apart for showing: [`error`] prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub event: &'static str,
    pub kind: &'static str,
    pub message: String,
    pub hint: Option<String>,
    pub causes: Vec<String>,
}

impl Report {
    pub fn new(err: &CliError) -> Self {
        let message = err.to_string();
        Self {
            event: "error",
            kind: err.kind(),
            causes: causes(&message, err),
            message,
            hint: err.hint().map(|h| h.into_owned()),
        }
    }
}

/// The source chain as lines. A source whose text an outer message already contains is left out:
/// errors of other crates often write `…: {source}` and name the same value as their source.
fn causes(message: &str, err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut shown: Vec<String> = vec![message.to_owned()];
    let mut next = err.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !text.is_empty() && !shown.iter().any(|s| s.contains(&text)) {
            shown.push(text);
        }
        next = source.source();
    }
    shown.split_off(1)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", indented(&self.message, "  "))?;
        for cause in &self.causes {
            write!(f, "\n  caused by: {}", indented(cause, "    "))?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {}", indented(hint, "  "))?;
        }
        Ok(())
    }
}

/// `text` with its lines after the first indented by `by` (a multi-line cause, such as a TOML
/// parse error with its excerpt, stays under its label).
fn indented(text: &str, by: &str) -> String {
    let text = text.trim_end();
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(by);
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UsageError;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn the_chain_is_listed_once_under_the_message_and_the_hint_last() {
        let err = CliError::from(UsageError::Out {
            path: "no/such/t.yaml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
        let report = Report::new(&err);
        assert_eq!(
            report.to_string(),
            "error: --out no/such/t.yaml: cannot write the template there\n  \
             caused by: no such directory\n\
             hint: check that the directory exists and is writable"
        );
        assert_eq!(report.causes, vec!["no such directory"]);
    }

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        let err = CliError::system("cannot start", Repeats(std::io::Error::other("disk full")));
        assert_eq!(Report::new(&err).causes, vec!["outer: disk full"]);
    }

    #[test]
    fn multi_line_causes_stay_under_their_label() {
        let err = CliError::system("cannot start", "line one\nline two\n");
        assert_eq!(
            Report::new(&err).to_string(),
            "error: cannot start\n  caused by: line one\n    line two"
        );
    }
}

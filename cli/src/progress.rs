//! Progress for long steps: an `indicatif` spinner on a terminal, plain lines on stderr when
//! stderr is not a terminal or `CI` is set, nothing at all for JSON output (stdout stays parseable).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::args::OutputFormat;

/// One step in progress.
#[derive(Debug)]
pub struct Step {
    bar: Option<ProgressBar>,
    plain: bool,
    started: Instant,
    label: String,
}

impl Step {
    pub fn start(format: OutputFormat, label: impl Into<String>) -> Self {
        let label = label.into();
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let (bar, plain) = match (format, interactive) {
            (OutputFormat::Json, _) => (None, false),
            (OutputFormat::Text, true) => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                (Some(bar), false)
            }
            (OutputFormat::Text, false) => {
                eprintln!("{label} …");
                (None, true)
            }
        };
        Self {
            bar,
            plain,
            started: Instant::now(),
            label,
        }
    }

    /// End the step, saying how it went.
    pub fn finish(self, outcome: &str) {
        let line = format!(
            "{} {outcome} ({:.1}s)",
            self.label,
            self.started.elapsed().as_secs_f64()
        );
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
            eprintln!("{line}");
        } else if self.plain {
            eprintln!("{line}");
        }
    }
}

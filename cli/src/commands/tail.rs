//! `chatctl tail ROOM`: the room's last messages, then new ones and recalls as they happen,
//! until Ctrl-C. People get aligned columns (coloured on a terminal); scripts get one JSON object
//! per line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_core::domain::RoomName;
use chatctl_ops::operator::{TailEvent, clock_time};

use crate::args::{OutputFormat, TailArgs};
use crate::commands::target;
use crate::error::CliError;

/// Text styling: ANSI colours only for a person at a terminal who has not asked for none.
#[derive(Debug, Clone, Copy)]
struct Style {
    colour: bool,
}

impl Style {
    fn detect() -> Self {
        let colour = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none()
            && std::env::var_os("CI").is_none();
        Self { colour }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// One of six colours per user name, so a conversation is easy to follow.
    fn user(self, name: &str) -> String {
        const COLOURS: [&str; 6] = ["1;31", "1;32", "1;33", "1;34", "1;35", "1;36"];
        let hash = name.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.paint(COLOURS[hash % COLOURS.len()], &format!("{name:<12}"))
    }
}

/// One event as a line for people.
fn line(event: &TailEvent, style: Style) -> String {
    match event {
        TailEvent::Message(m) => {
            let time = style.paint("2", &clock_time(m.ts));
            let id = style.paint("2", &m.id.to_string());
            match (&m.text, &m.recall) {
                (Some(text), _) => format!("{time}  {}  {text}  {id}", style.user(m.user.as_str())),
                (None, recall) => {
                    let by = recall.as_ref().map_or("?", |r| r.by.as_str());
                    format!(
                        "{time}  {}  {}  {id}",
                        style.user(m.user.as_str()),
                        style.paint("9;2", &format!("(recalled by {by})"))
                    )
                }
            }
        }
        TailEvent::Recalled {
            id,
            by,
            at,
            operator,
            reason,
            ..
        } => {
            let who = if *operator {
                format!("operator {by}")
            } else {
                by.to_string()
            };
            let why = reason
                .as_ref()
                .map_or_else(String::new, |r| format!(": {r}"));
            format!(
                "{}  {}",
                style.paint("2", &clock_time(*at)),
                style.paint("33", &format!("✗ message {id} recalled by {who}{why}"))
            )
        }
    }
}

/// Print events; false once stdout is closed (`chatctl tail … | head -3`): then tail stops.
fn print(events: &[TailEvent], format: OutputFormat, style: Style) -> bool {
    let mut out = std::io::stdout().lock();
    for event in events {
        let written = match format {
            OutputFormat::Json => serde_json::to_writer(&mut out, event)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out)),
            OutputFormat::Text => writeln!(out, "{}", line(event, style)),
        };
        if written.is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

pub fn run(args: TailArgs, format: OutputFormat) -> Result<u8, CliError> {
    let room = RoomName::parse(&args.room).map_err(|e| CliError::invalid("ROOM", &args.room, e))?;
    let since_ms = match args.since {
        None => None,
        Some(d) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| CliError::system("the clock is before 1970", e))?;
            Some(i64::try_from(now.saturating_sub(d).as_millis()).unwrap_or(i64::MAX))
        }
    };
    let style = Style::detect();
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let target = target::resolve(&args.target).await?;
        let operator = target.operator()?;
        let interval = args.interval.unwrap_or_else(|| target.default_interval());
        let (events, mut cursor) = operator.tail_start(&room, args.lines, since_ms).await?;
        if !print(&events, format, style) || args.no_follow {
            return Ok(0);
        }
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(0),
                () = tokio::time::sleep(interval) => {}
            }
            match operator.tail_poll(&room, &mut cursor).await {
                Ok(events) => {
                    failures = 0;
                    if !print(&events, format, style) {
                        return Ok(0);
                    }
                }
                // A passing network or throttling error must not end a long watch: say so, back
                // off, go on.
                Err(e) => {
                    failures += 1;
                    eprintln!("tail: reading {room} failed ({e}); retrying");
                    let pause = Duration::from_secs(u64::from(failures.min(10)));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    })
}

//! The short operator commands — `presence`, `recall`, `send`, `kick`, `connections gc` — each
//! a call to the operator of the chosen target (local by default, `--stage` for AWS) and its
//! result as text or JSON.

use std::fmt;

use chat_core::domain::{ConnectionId, Message, MessageId, RoomName, UserName};
use chatctl_ops::operator::{MessageView, clock_time};
use serde::Serialize;

use crate::args::{
    GcArgs, KickArgs, OutputFormat, PRESENCE_TEXT_LIMIT, PresenceArgs, RecallArgs, SendArgs,
};
use crate::commands::target;
use crate::error::{CliError, UsageError};
use crate::output;

pub fn presence(args: PresenceArgs, format: OutputFormat) -> Result<u8, CliError> {
    let room = RoomName::parse(&args.room).map_err(|e| CliError::invalid("ROOM", &args.room, e))?;
    crate::runtime()?.block_on(async {
        let target = target::resolve(&args.target).await?;
        let operator = target.operator()?;
        // Text is for a person at a terminal: a default cap. JSON is for programs: everything,
        // unless they ask for less.
        let limit = match (args.limit, format) {
            (Some(n), _) => Some(n),
            (None, OutputFormat::Text) => Some(PRESENCE_TEXT_LIMIT),
            (None, _) => None,
        };
        loop {
            let mut report = operator.presence(&room).await?;
            if let Some(n) = limit {
                report = report.limited(usize::try_from(n).unwrap_or(usize::MAX));
            }
            output::emit(format, &report);
            if !args.watch {
                return Ok(0);
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(0),
                () = tokio::time::sleep(args.interval) => {}
            }
            if format == OutputFormat::Text {
                println!();
            }
        }
    })
}

/// A recalled message, or a message's versions (`--show`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecallReport {
    pub recalled: bool,
    pub versions: Vec<MessageView>,
}

impl fmt::Display for RecallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(last) = self.versions.last() else {
            return write!(f, "no such message");
        };
        if self.recalled {
            writeln!(f, "recalled message {} in {}", last.id, last.room)?;
        } else {
            writeln!(
                f,
                "message {} in {} by {}: {} version{}",
                last.id,
                last.room,
                last.user,
                self.versions.len(),
                if self.versions.len() == 1 { "" } else { "s" }
            )?;
        }
        for (i, v) in self.versions.iter().enumerate() {
            let what = match (&v.text, &v.recall) {
                (Some(text), _) => format!("{}  {}  {text}", clock_time(v.ts), v.user),
                (None, Some(r)) => format!(
                    "{}  recalled by {}{}{}",
                    clock_time(r.at),
                    r.by,
                    if r.operator { " (operator)" } else { "" },
                    r.reason
                        .as_ref()
                        .map_or_else(String::new, |why| format!(": {why}"))
                ),
                (None, None) => "(no text)".to_owned(),
            };
            write!(f, "  v{}  {what}", v.version)?;
            if i + 1 < self.versions.len() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

pub fn recall(args: RecallArgs, format: OutputFormat) -> Result<u8, CliError> {
    let id =
        MessageId::parse(&args.id).map_err(|e| CliError::invalid("MESSAGE_ID", &args.id, e))?;
    let by = UserName::parse(&args.operator)
        .map_err(|e| CliError::invalid("--as", &args.operator, e))?;
    const MAX_REASON: usize = 500;
    if let Some(reason) = &args.reason
        && (reason.trim().is_empty() || reason.len() > MAX_REASON)
    {
        return Err(UsageError::Reason {
            len: reason.len(),
            max: MAX_REASON,
        }
        .into());
    }
    crate::runtime()?.block_on(async {
        let target = target::resolve(&args.target).await?;
        let operator = target.operator()?;
        let recalled = if args.show {
            false
        } else {
            operator.recall(id, by, args.reason.clone()).await?;
            true
        };
        let versions: Vec<MessageView> = operator
            .versions(id)
            .await?
            .iter()
            .map(MessageView::from)
            .collect();
        if versions.is_empty() {
            return Err(CliError::Ops(chatctl_ops::operator::OpsError::Recall(
                chat_core::handler::RecallError::NotFound(id),
            )));
        }
        output::emit(format, &RecallReport { recalled, versions });
        Ok(0)
    })
}

/// A posted announcement.
#[derive(Debug, Clone, Serialize)]
pub struct SentReport(pub MessageView);

impl fmt::Display for SentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} to {} as {}",
            self.0.id, self.0.room, self.0.user
        )
    }
}

pub fn send(args: SendArgs, format: OutputFormat) -> Result<u8, CliError> {
    let room = RoomName::parse(&args.room).map_err(|e| CliError::invalid("ROOM", &args.room, e))?;
    let user = UserName::parse(&args.operator)
        .map_err(|e| CliError::invalid("--as", &args.operator, e))?;
    let limit = chat_core::policy::ChatConfig::default()
        .frames
        .max_text_bytes;
    if args.text.trim().is_empty() || args.text.len() > limit {
        return Err(UsageError::Text {
            len: args.text.len(),
            max: limit,
        }
        .into());
    }
    crate::runtime()?.block_on(async {
        let target = target::resolve(&args.target).await?;
        let operator = target.operator()?;
        let message: Message = operator.send(room, user, args.text.clone()).await?;
        output::emit(format, &SentReport(MessageView::from(&message)));
        Ok(0)
    })
}

pub fn kick(args: KickArgs, format: OutputFormat) -> Result<u8, CliError> {
    if args.connection_id.trim().is_empty() {
        return Err(UsageError::EmptyConnectionId.into());
    }
    let id = ConnectionId::new(args.connection_id.clone());
    crate::runtime()?.block_on(async {
        let target = target::resolve(&args.target).await?;
        let operator = target.operator()?;
        output::emit(format, &operator.kick(&id).await?);
        Ok(0)
    })
}

pub fn gc(args: GcArgs, format: OutputFormat) -> Result<u8, CliError> {
    crate::runtime()?.block_on(async {
        let target = target::resolve(&args.target).await?;
        let operator = target.operator()?;
        output::emit(format, &operator.gc(args.dry_run).await?);
        Ok(0)
    })
}

//! `chatctl smoke`: the post-deploy check. Two clients with freshly minted tokens (limited to one
//! new room, valid ten minutes) connect to the target's public WebSocket URL, chat, read history,
//! recall, and disconnect; any failure exits 1 naming the step and what arrived instead.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use chat_core::domain::{RoomName, UserName};
use chat_core::token::{Claims, TokenKey};
use chatctl_ops::smoke::{self, SmokeOptions, SmokeTarget, Token};

use crate::args::{OutputFormat, SmokeArgs};
use crate::commands::target;
use crate::error::CliError;
use crate::output;

fn mint(key: &TokenKey, user: &str, room: &RoomName) -> Result<Token, CliError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CliError::system("the clock is before 1970", e))?
        .as_secs();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let sub = UserName::parse(user).map_err(|e| CliError::invalid("user", user, e))?;
    let claims = Claims {
        sub,
        iat: now,
        exp: now + 600,
        rooms: Some(BTreeSet::from([room.clone()])),
        op: false,
    };
    Ok(Token::new(user, key.mint(&claims)))
}

pub fn run(args: SmokeArgs, format: OutputFormat) -> Result<u8, CliError> {
    let room_name = args.room.clone().unwrap_or_else(SmokeOptions::fresh_room);
    let room =
        RoomName::parse(&room_name).map_err(|e| CliError::invalid("--room", &room_name, e))?;
    crate::runtime()?.block_on(async {
        let target = target::resolve(&args.target).await?;
        let url = target.websocket_url()?;
        let key = target.token_key().await?;
        let smoke_target = SmokeTarget {
            url,
            alice: mint(&key, "smoke-alice", &room)?,
            bob: mint(&key, "smoke-bob", &room)?,
        };
        let options = SmokeOptions {
            room: room_name,
            timeout: args.timeout,
        };
        let report = smoke::smoke(&smoke_target, &options).await?;
        output::emit(format, &report);
        Ok(0)
    })
}

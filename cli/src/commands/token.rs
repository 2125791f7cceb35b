//! `chatctl token`: mint a connection token signed with the local secret, or with a deployed
//! stage's (`--stage`: read from SSM, never printed).

use std::collections::BTreeSet;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chat_core::domain::{RoomName, UserName};
use chat_core::token::{Claims, TokenKey};
use serde::Serialize;

use crate::args::{OutputFormat, TokenArgs};
use crate::error::{CliError, UsageError};
use crate::output;

/// A minted token. As text it is the token alone, so `TOKEN=$(chatctl token --user ann)` works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedToken {
    pub token: String,
    pub user: UserName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<BTreeSet<RoomName>>,
    pub operator: bool,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

impl fmt::Display for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token)
    }
}

/// What the flags ask for, checked before any secret is read or created.
struct Request {
    user: UserName,
    rooms: Option<BTreeSet<RoomName>>,
    ttl_secs: i64,
}

fn request(args: &TokenArgs) -> Result<Request, CliError> {
    let user =
        UserName::parse(&args.user).map_err(|e| CliError::invalid("--user", &args.user, e))?;
    let rooms = if args.room.is_empty() {
        None
    } else {
        Some(
            args.room
                .iter()
                .map(|r| RoomName::parse(r).map_err(|e| CliError::invalid("--room", r, e)))
                .collect::<Result<BTreeSet<_>, _>>()?,
        )
    };
    let ttl_secs =
        i64::try_from(args.ttl.as_secs()).map_err(|_| UsageError::Ttl { ttl: args.ttl })?;
    Ok(Request {
        user,
        rooms,
        ttl_secs,
    })
}

/// Mint a token for `args` with `key`, valid from `now_secs`.
pub fn mint(key: &TokenKey, args: &TokenArgs, now_secs: i64) -> Result<MintedToken, CliError> {
    let Request {
        user,
        rooms,
        ttl_secs,
    } = request(args)?;
    let claims = Claims {
        sub: user.clone(),
        exp: now_secs.saturating_add(ttl_secs),
        iat: now_secs,
        rooms: rooms.clone(),
        op: args.operator,
    };
    Ok(MintedToken {
        token: key.mint(&claims),
        user,
        rooms,
        operator: args.operator,
        expires_at: claims.exp,
    })
}

pub fn run(args: TokenArgs, format: OutputFormat) -> Result<(), CliError> {
    // A mistake in the flags is reported before the data directory (or the stage) is touched.
    request(&args)?;
    let key = crate::runtime()?.block_on(async {
        crate::commands::target::resolve(&args.target)
            .await?
            .token_key()
            .await
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CliError::system("the system clock is before 1970", e))?
        .as_secs();
    let minted = mint(&key, &args, i64::try_from(now).unwrap_or(i64::MAX))?;
    output::emit(format, &minted);
    Ok(())
}

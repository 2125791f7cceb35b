//! The `chatctl` command line: argument parsing and dispatch. Logic lives in the library crates
//! (`chat-local`, later `chatctl-infra` and `chat-aws`); each command here turns flags into their
//! configuration and renders the result as text or JSON.

pub mod args;
pub mod commands;
pub mod error;
pub mod output;
pub mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, ConnectionsCommand, ExportCommand};
use crate::error::CliError;

/// Run the command line of this process.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let output = cli.output;
    let result = match cli.command {
        Command::Dev(args) => commands::dev::run(args, output).map(|()| 0),
        Command::Token(args) => commands::token::run(args, output).map(|()| 0),
        Command::Build(args) => commands::build::run(args, output).map(|()| 0),
        Command::Plan(args) => commands::plan::run(args, output),
        Command::Deploy(args) => commands::deploy::run(args, output),
        Command::Destroy(args) => commands::destroy::run(args, output),
        Command::Status(args) => commands::status::run(args, output),
        Command::Outputs(args) => commands::status::outputs(args, output),
        Command::Releases(args) => commands::releases::list(args, output),
        Command::Rollback(args) => commands::releases::rollback(args, output),
        Command::Tail(args) => commands::tail::run(args, output),
        Command::Presence(args) => commands::ops::presence(args, output),
        Command::Recall(args) => commands::ops::recall(args, output),
        Command::Send(args) => commands::ops::send(args, output),
        Command::Kick(args) => commands::ops::kick(args, output),
        Command::Connections(ConnectionsCommand::Gc(args)) => commands::ops::gc(args, output),
        Command::Smoke(args) => commands::smoke::run(args, output),
        Command::Export(ExportCommand::Cloudformation(args)) => {
            commands::export::cloudformation(args, output)
        }
        Command::Init(args) => commands::init::run(args, output).map(|()| 0),
        Command::Completions(args) => commands::reference::completions(args).map(|()| 0),
        Command::Man(args) => commands::reference::man(args, output).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            output::error(output, &err);
            ExitCode::from(err.exit_code())
        }
    }
}

/// Build a runtime for a command; failing to is an environment problem worth a clear message.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Environment(format!("cannot start the async runtime: {e}")))
}

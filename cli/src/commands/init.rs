//! `chatctl init`: start a project (chatctl_infra::scaffold writes the files).

use std::path::Path;

use chatctl_infra::config::DEFAULT_APP;
use chatctl_infra::scaffold::{self, InitRequest};
use chatctl_infra::stack::StackName;

use crate::args::{InitArgs, OutputFormat};
use crate::error::CliError;
use crate::output;

pub fn run(args: InitArgs, format: OutputFormat) -> Result<(), CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::system("cannot read the current directory", e))?;
    let dir = cwd.join(&args.dir);
    let app = args.app.unwrap_or_else(|| app_from(&dir));
    let report = scaffold::init(&InitRequest {
        dir: args.dir,
        app,
        eject: args.eject,
        force: args.force,
    })?;
    output::emit(format, &report);
    Ok(())
}

/// The directory's name when it is a valid app name (`acme-chat`), else the default.
fn app_from(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .filter(|name| StackName::new(name, "dev").is_ok())
        .unwrap_or_else(|| DEFAULT_APP.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_is_the_directory_name_when_it_can_be() {
        assert_eq!(app_from(Path::new("/nonexistent/acme-chat")), "acme-chat");
        assert_eq!(app_from(Path::new("/nonexistent/Acme")), "acme");
        assert_eq!(app_from(Path::new("/nonexistent/my project")), DEFAULT_APP);
        assert_eq!(app_from(Path::new("/")), DEFAULT_APP);
    }
}

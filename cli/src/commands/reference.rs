//! `chatctl completions` and `chatctl man`: the command line described for shells and `man`,
//! generated from the same clap definition as `--help` (clap_complete, clap_mangen).

use std::fmt;
use std::path::PathBuf;

use clap::CommandFactory;
use serde::Serialize;

use crate::args::{Cli, CompletionsArgs, ManArgs, OutputFormat, Shell};
use crate::error::CliError;
use crate::output;

pub fn completions(args: CompletionsArgs) -> Result<(), CliError> {
    use clap_complete::Shell as S;
    let shell = match args.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Powershell => S::PowerShell,
        Shell::Elvish => S::Elvish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "chatctl", &mut script);
    output::raw(&String::from_utf8_lossy(&script));
    Ok(())
}

/// The pages `man --out` wrote.
#[derive(Debug, Serialize)]
pub struct ManReport {
    pub event: &'static str,
    pub dir: PathBuf,
    pub pages: Vec<String>,
}

impl fmt::Display for ManReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} manual pages to {} (chatctl.1, chatctl-deploy.1 …); read one with `man chatctl`\n\
             if that directory is on MANPATH, or `man {}/chatctl.1`",
            self.pages.len(),
            self.dir.display(),
            self.dir.display()
        )
    }
}

pub fn man(args: ManArgs, format: OutputFormat) -> Result<(), CliError> {
    let command = Cli::command();
    let Some(dir) = args.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(|e| CliError::system("cannot render the manual page", e))?;
        output::raw(&String::from_utf8_lossy(&page));
        return Ok(());
    };
    let fail = |e| CliError::system(format!("cannot write manual pages to {}", dir.display()), e);
    std::fs::create_dir_all(&dir).map_err(fail)?;
    clap_mangen::generate_to(command, &dir).map_err(fail)?;
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .map_err(fail)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chatctl") && n.ends_with(".1"))
        .collect();
    pages.sort();
    output::emit(
        format,
        &ManReport {
            event: "man-pages",
            dir,
            pages,
        },
    );
    Ok(())
}

//! The one way chatctl runs other programs: the command line is recorded, output is captured, and
//! a failure becomes a typed error carrying the command and the tail of its output.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Output};

/// How many trailing lines of a failed program's output an error keeps.
const TAIL_LINES: usize = 40;

/// A program that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); its last output:\n{tail}")]
    Failed {
        command: String,
        status: String,
        tail: String,
    },
}

/// A command line for messages: program and arguments, space separated.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a successful run printed.
#[derive(Debug, Clone)]
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.stdout, self.stderr)
    }
}

fn tail(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Run `cmd` to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Result<Captured, ProcessError> {
    let output = cmd.output().map_err(|source| ProcessError::Spawn {
        program: PathBuf::from(cmd.get_program()),
        source,
    })?;
    if !output.status.success() {
        return Err(ProcessError::Failed {
            command: display(cmd),
            status: output.status.to_string(),
            tail: tail(&output),
        });
    }
    Ok(Captured {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_the_command_and_the_tail() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "for i in $(seq 1 50); do echo line$i; done; echo oops >&2; exit 3",
        ]);
        let err = run(&mut cmd).unwrap_err().to_string();
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(
            err.contains("oops") && err.contains("line50") && !err.contains("line5\n"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/tool")).unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }));
    }

    #[test]
    fn success_captures_output() {
        let out = run(Command::new("sh").args(["-c", "echo hi; echo there >&2"])).unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "there\n");
    }
}

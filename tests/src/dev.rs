//! A `chatctl dev` process for tests of the binary: started with `--port 0 --output json`, its
//! `ready` line read, stopped with SIGTERM or killed on drop.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::Value;

/// A `chatctl dev` process and its `ready` line.
#[derive(Debug)]
pub struct Dev {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
    pub ready: Value,
}

impl Dev {
    pub fn start(bin: &str, data_dir: &Path, extra: &[&str]) -> Dev {
        Self::start_env(bin, data_dir, extra, &[])
    }

    pub fn start_env(bin: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Dev {
        let mut child = Command::new(bin)
            .args(["dev", "--port", "0", "--output", "json", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chatctl dev");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready line");
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(ready["event"], "ready");
        Dev {
            child,
            stdout,
            ready,
        }
    }

    pub fn ws(&self, query: &str) -> String {
        format!("{}?{query}", self.ready["websocketUrl"].as_str().unwrap())
    }

    /// SIGTERM, then the `stopped` line and the exit status.
    pub fn terminate(mut self) -> (Value, std::process::ExitStatus) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let status = self.child.wait().unwrap();
        (serde_json::from_str(&line).unwrap_or(Value::Null), status)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

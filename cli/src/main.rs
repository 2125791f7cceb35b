//! `chatctl`: parse the command line, run, exit with the command's code.

fn main() -> std::process::ExitCode {
    chatctl::run()
}

#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, every Rust test (unit, socket, binary), and
# the browser test of the web page. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
say() { printf '==> %s\n' "$*"; }

scripts/setup.sh

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
cargo test --workspace --locked --no-fail-fast

say "fuzz targets, 10 s each (scripts/fuzz.sh SECONDS for a longer run)"
scripts/fuzz.sh 10

say "browser test (headless Chromium)"
CHATCTL_BIN="$target_dir/debug/chatctl" node --test tests/browser/

say "all tests passed in $(( $(date +%s) - started ))s"

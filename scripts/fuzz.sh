#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo fuzz, libFuzzer) for SECONDS each, one after another:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default: 10 s each, every target
#
# Corpora live in fuzz/corpus/TARGET (the committed seeds and regression inputs, plus what
# libFuzzer adds, which git ignores); crashes are written to fuzz/artifacts/TARGET. Prints the
# executions of each target as a table and exits non-zero if any target crashed (a panic, a
# failed assertion, a timeout or running out of memory). Installs nothing: cargo-fuzz comes
# from scripts/setup.sh.
#
# Reproduce a crash, from fuzz/:  cargo fuzz run --sanitizer none TARGET artifacts/TARGET/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(client_frame token events config plan)
seconds=${1:-10}
[ $# -gt 0 ] && shift
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]  (SECONDS a whole number > 0, got '$seconds')" >&2
  exit 2
fi
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "error: no fuzz target '$t' (there are: ${all_targets[*]})" >&2
    exit 2
  fi
done

say() { printf '==> %s\n' "$*"; }

# cargo-fuzz is installed by scripts/setup.sh into the tools directory, which need not be on PATH.
tools=${CHATCTL_TOOLS:-$HOME/.cache/chatctl/tools}
export PATH="$tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "error: cargo-fuzz is not installed: run scripts/setup.sh, which installs the pinned version into $tools/bin" >&2
  exit 2
fi

# No sanitizer by default: the targets and the project's crates are safe Rust (unsafe_code is
# forbidden in the workspace), so AddressSanitizer would watch little but the standard library
# and well-fuzzed dependencies, while it needs a nightly compiler and costs both ways. Measured on
# this 2-core machine with client_frame alone (chat-core only, cold, nightly): 88 s to build
# without it, 130 s with it; in 20 s of fuzzing, 844,216 executions without it, 105,733 with it.
# Panics, failed assertions, arithmetic overflow (cargo fuzz turns debug assertions on), hangs and
# memory blow-ups are caught without it. A long run with it:
# CHATCTL_FUZZ_SANITIZER=address scripts/fuzz.sh 3600.
sanitizer=${CHATCTL_FUZZ_SANITIZER:-none}
# The toolchain: without a sanitizer cargo fuzz passes no unstable flag, so the project's pinned
# toolchain (rust-toolchain.toml, 1.95.0) builds and runs the targets as it is, on every machine,
# whether or not it has a nightly. A sanitizer needs -Zsanitizer: nightly when the machine has
# it, else the pinned toolchain with RUSTC_BOOTSTRAP=1 (both checked to build with ASan).
toolchain=()
if [ "$sanitizer" != none ]; then
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
  else
    export RUSTC_BOOTSTRAP=1
  fi
fi
flags=(--sanitizer "$sanitizer")
# Its own target dir, never the workspace's (other RUSTFLAGS would rebuild it): fuzz/target, or,
# when the caller keeps builds outside the clone (CI's CARGO_TARGET_DIR), a `fuzz` folder there
# so the next run is warm.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  target_dir="$CARGO_TARGET_DIR/fuzz"
else
  target_dir="$PWD/fuzz/target"
fi
unset CARGO_TARGET_DIR
flags+=(--target-dir "$target_dir")
fuzz() { (cd fuzz && cargo "${toolchain[@]}" fuzz "$@"); }

say "cargo ${toolchain[*]:-} fuzz build ${flags[*]} ($(cd fuzz && rustc "${toolchain[@]}" --version)${RUSTC_BOOTSTRAP:+, RUSTC_BOOTSTRAP=1})"
started=$(date +%s)
if [ ${#targets[@]} -eq ${#all_targets[@]} ]; then
  fuzz build "${flags[@]}"
else
  for t in "${targets[@]}"; do fuzz build "${flags[@]}" "$t"; done
fi
say "built in $(( $(date +%s) - started ))s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
rows=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  say "fuzz $t for ${seconds}s"
  status=0
  # cargo fuzz runs from fuzz/ with corpus fuzz/corpus/$t and -artifact_prefix fuzz/artifacts/$t/.
  # -timeout: one input running this long is a hang, reported as a crash.
  fuzz run "${flags[@]}" "$t" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$logs/$t" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$logs/$t" | tail -1)
  [ -z "$execs" ] && execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$logs/$t" | tail -1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t" | tail -1)
    result="FAILED (exit $status${artifact:+, $artifact})"
    # The fuzzer's own account: the panic message and the input's path.
    grep -v '^#[0-9]' "$logs/$t" | tail -40 >&2
  fi
  rows+=("$(printf '%-14s %14s %8s  %s' "$t" "${execs:-?}" "$corpus" "$result")")
done

printf '\n%-14s %14s %8s  %s\n' target executions corpus result
for row in "${rows[@]}"; do printf '%s\n' "$row"; done
if [ "$failed" -ne 0 ]; then
  echo "fuzzing found crashes: see fuzz/artifacts/ (reproduce with cargo fuzz run TARGET FILE)" >&2
  exit 1
fi

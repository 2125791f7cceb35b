#!/usr/bin/env bash
# Measures the Lambda zips after each size step (issue 11): builds both handlers for arm64 with
# cargo-lambda under each profile in turn and prints the zip and bootstrap sizes. Each step is a
# full release build (~5-10 min on 2 cores); not part of the test suite.
#   scripts/zip-sizes.sh [STEP...]     steps: today fat-lto size-s size-z chatctl
# `chatctl` is `chatctl build` itself (its profile overrides, and the handlers' trimmed
# dependencies of the working tree); the others are cargo-lambda with profile overrides.
# cargo-lambda adds panic=abort to every step by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=${CHATCTL_TOOLS:-$HOME/.cache/chatctl/tools}/bin:$PATH
target=${SIZE_TARGET_DIR:-$HOME/.cache/chatctl/size-target}
out=${SIZE_OUT:-/tmp/chatctl-zip-sizes}
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(today fat-lto size-s size-z chatctl)

# Each step adds to the one before it.
profile_env() {
  case $1 in
    today)   echo "CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4" ;;
    fat-lto) echo "CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1" ;;
    size-s)  echo "CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_OPT_LEVEL=s" ;;
    size-z)  echo "CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_OPT_LEVEL=z" ;;
    *) echo "unknown step $1" >&2; exit 2 ;;
  esac
}

printf '%-8s %-12s %12s %14s %8s\n' step handler zip bootstrap build_s
for step in "${steps[@]}"; do
  rm -rf "${out:?}/$step"
  started=$(date +%s)
  if [ "$step" = chatctl ]; then
    cargo build -q -p chatctl
    CARGO_TARGET_DIR=$target "${CARGO_TARGET_DIR:-target}/debug/chatctl" build --out "$out/$step" \
      >"$out.$step.log" 2>&1
  else
    # shellcheck disable=SC2046
    env CARGO_TARGET_DIR="$target" $(profile_env "$step") cargo lambda build --release --arm64 \
      --output-format zip --lambda-dir "$out/$step" -p chat-ws -p chat-fanout >"$out.$step.log" 2>&1
  fi
  took=$(( $(date +%s) - started ))
  for h in chat-ws chat-fanout; do
    zip="$out/$step/$h/bootstrap.zip"
    boot=$(python3 -c 'import sys,zipfile; print(zipfile.ZipFile(sys.argv[1]).getinfo("bootstrap").file_size)' "$zip")
    printf '%-8s %-12s %12d %14d %8d\n' "$step" "$h" "$(stat -c %s "$zip")" "$boot" "$took"
  done
done

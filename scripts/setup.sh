#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, from the package registries:
# Chromium (Debian) for the browser test, and the browser test's npm packages. Idempotent: a
# machine that already has them only checks. Everything the tests need is installed from here,
# never by hand, so a fresh machine passes as this one does.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "error: ${need_apt[*]} missing and no root/sudo to install them; install them with your package manager" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  say "installing ${need_apt[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
say "chromium: $(chromium --version 2>/dev/null || echo missing)"

if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  say "installing the browser test's npm packages"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
# Python tools, pinned: the moto server (the AWS emulator the tests start), cargo-lambda and zig
# (the Lambda build), cfn-lint (checks the exported CloudFormation template against AWS's resource
# schemas, which it ships: no network at run time). They live in one venv outside the clone so CI
# can keep it between runs.
tools=${CHATCTL_TOOLS:-$HOME/.cache/chatctl/tools}
pins="moto[server]==5.2.5 cargo-lambda==1.9.2 ziglang==0.17.1 cfn-lint==1.58.0"
if [ ! -x "$tools/bin/moto_server" ] || [ ! -x "$tools/bin/cargo-lambda" ] || [ "$(cat "$tools/.pins" 2>/dev/null)" != "$pins" ]; then
  say "installing $pins into $tools"
  python3 -m venv "$tools"
  # shellcheck disable=SC2086
  "$tools/bin/pip" install --quiet --disable-pip-version-check $pins
  echo "$pins" > "$tools/.pins"
fi
say "tools: $(cat "$tools/.pins"); $("$tools/bin/cargo-lambda" lambda --version 2>&1 | head -1)"
# cargo-fuzz, pinned, for scripts/fuzz.sh: built from crates.io into the same tools directory
# (its bin/, beside the venv's), so CI keeps it between runs too.
fuzz_pin=0.13.2
if [ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $fuzz_pin" ]; then
  say "installing cargo-fuzz $fuzz_pin into $tools"
  cargo install cargo-fuzz --version "$fuzz_pin" --locked --quiet --root "$tools"
fi
say "cargo-fuzz: $("$tools/bin/cargo-fuzz" --version)"
say "setup done"

#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh Debian machine: installs what
# the tests need, then fmt, clippy, unit/integration/e2e tests and docs. Fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  # etcd-server: the peer the store benchmark compares against (tests do not need it).
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "=== cargo fmt --check"
cargo fmt --all --check
echo "=== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "=== cargo test"
cargo test --workspace
echo "=== cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --quiet
echo "=== all checks passed"

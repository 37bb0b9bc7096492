#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh Debian machine: installs what
# the tests need, then fmt, clippy, unit/integration/e2e tests and docs. Fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Today's tests need only the Rust toolchain (protobufs compile with protox, no protoc).
# The system packages later tests need (a local registry, busybox-static, nftables) are
# installed here when those tests arrive.
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

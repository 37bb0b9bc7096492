#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh Debian machine: installs what
# the tests need, then fmt, clippy, unit/integration/e2e tests and docs. Fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: libseccomp-dev to build the runtime's seccomp support; a local
# registry (docker-registry), image tools (umoci, skopeo) and busybox-static for test
# images; crun/runc as the pod-start benchmark's peers; iproute2 and nftables for
# networking. Protobufs compile with protox (no protoc).
packages=(docker-registry skopeo umoci busybox-static crun runc libseccomp-dev pkg-config iproute2 nftables)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "=== installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
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

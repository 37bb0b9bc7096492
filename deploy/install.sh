#!/usr/bin/env bash
# Installs Skiff on this machine as a systemd service:
#   install.sh [--dry-run] control-plane [skiff-control-plane flags…]
#   install.sh [--dry-run] agent --server https://HOST:6443 --token K10… [skiff-node-agent flags…]
# It copies skiff, skiff-control-plane and skiff-node-agent from ${SKIFF_BIN:-target/release}
# to /usr/local/bin, the role's unit from deploy/systemd/ to /etc/systemd/system, writes
# the flags to /etc/skiff/<role>.env (mode 0600; --token goes to SKIFF_TOKEN there, so it
# never shows in `ps`), installs an agent's packages (iproute2, nftables) when missing,
# then enables and (re)starts the service. Running it again upgrades in place; an
# agent's containers keep running across the restart. --dry-run prints what it would do.
set -euo pipefail

usage() {
  echo "usage: install.sh [--dry-run] control-plane [skiff-control-plane flags…]"
  echo "       install.sh [--dry-run] agent --server https://HOST:6443 --token K10… [skiff-node-agent flags…]"
}
die() {
  echo "install.sh: $*" >&2
  exit 1
}

dry_run=false
if [ "${1:-}" = --dry-run ]; then
  dry_run=true
  shift
fi
case "${1:-}" in
  control-plane) role=control-plane binary=skiff-control-plane data_dir=/var/lib/skiff/control-plane ;;
  agent) role=node-agent binary=skiff-node-agent data_dir=/var/lib/skiff/node-agent ;;
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown role '$1' (want control-plane or agent)" ;;
esac
shift
unit=skiff-$role.service
env_file=/etc/skiff/$role.env
deploy_dir=$(cd "$(dirname "$0")" && pwd)
bin_dir=${SKIFF_BIN:-target/release}

# Split the flags: --token moves to SKIFF_TOKEN, the rest becomes SKIFF_ARGS. systemd
# splits $SKIFF_ARGS at whitespace and the env file is quoted, so refuse what would not
# survive that.
token=${SKIFF_TOKEN:-}
args=()
servers=0
join=false
listen_peer=false
while (($#)); do
  case "$1" in
    --dry-run) die "--dry-run goes before the role (install.sh --dry-run control-plane|agent …)" ;;
    --token) (($# >= 2)) || die "--token needs a value"; token=$2; shift 2; continue ;;
    --token=*) token=${1#--token=}; shift; continue ;;
    --data-dir) (($# >= 2)) || die "--data-dir needs a value"; data_dir=$2 ;;
    --data-dir=*) data_dir=${1#--data-dir=} ;;
    --server | --server=*) servers=$((servers + 1)) ;;
    --join | --join=*) join=true ;;
    --listen-peer | --listen-peer=*) listen_peer=true ;;
  esac
  case "$1" in
    *[[:space:]\"\'\\\$\`]*) die "flag '$1' has whitespace, a quote, \\, \$ or \`, which the env file cannot carry" ;;
  esac
  args+=("$1")
  shift
done
case "$token" in
  *[[:space:]\"\'\\\$\`]*) die "the token has whitespace or quotes; pass it as printed (K10<ca-hash>::<id>.<secret>)" ;;
esac
if [ "$role" = node-agent ]; then
  ((servers)) || die "an agent needs --server https://HOST:6443 (repeat it for each control-plane member)"
  [ -n "$token" ] || die "an agent needs --token (cat /var/lib/skiff/control-plane/agent-token on the first member)"
fi
if [ "$role" = control-plane ] && $join; then
  [ -n "$token" ] || die "--join needs --token (cat /var/lib/skiff/control-plane/token on the first member)"
fi
if [ -n "$token" ] && [[ "$token" != K10*::*.* ]]; then
  die "the token must be the full K10<ca-hash>::<id>.<secret> form, as the first member wrote it"
fi

# Every change goes through these, so --dry-run shows exactly what a real run does.
run() {
  if $dry_run; then
    echo "+ $*"
  else
    "$@"
  fi
}
write_file() { # path mode; content on stdin
  local path=$1 mode=$2 tmp
  if $dry_run; then
    echo "+ write $path (mode $mode):"
    sed 's/^SKIFF_TOKEN=.*/SKIFF_TOKEN="<the token, not shown>"/;s/^/    /'
    return
  fi
  tmp=$(mktemp "$path.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
}
install_binary() { # source target
  # Copy beside the target and rename over it: replacing a running executable in place
  # fails (text file busy), and a rename leaves the running one intact.
  if $dry_run; then
    echo "+ install -m 0755 $1 $2"
    return
  fi
  install -m 0755 "$1" "$2.new"
  mv -f "$2.new" "$2"
}

# Preconditions.
if ! $dry_run; then
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo bash $0 …)"
  [ -d /run/systemd/system ] || die "systemd is not running on this machine; start the binaries by hand instead"
fi
[ -f "$deploy_dir/systemd/$unit" ] || die "$deploy_dir/systemd/$unit is missing; run this script from a Skiff checkout or a copy of deploy/"
[ -x "$bin_dir/$binary" ] || {
  message="$bin_dir/$binary is missing; build it (cargo build --release --workspace) or set SKIFF_BIN to where the binaries are"
  if $dry_run; then echo "warning: $message" >&2; else die "$message"; fi
}

if $dry_run; then
  echo "=== dry run: nothing is changed"
fi
echo "=== installing skiff ($role) from $bin_dir"
for name in skiff skiff-control-plane skiff-node-agent; do
  if [ -x "$bin_dir/$name" ] || { $dry_run && [ "$name" = "$binary" ]; }; then
    install_binary "$bin_dir/$name" "/usr/local/bin/$name"
  fi
done

if [ "$role" = node-agent ]; then
  # ip and nft program the pod network and the service proxy; libcontainer needs
  # libseccomp at run time.
  packages=(iproute2 nftables libseccomp2)
  missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "install ${missing[*]} first (no apt-get here)"
    echo "=== installing ${missing[*]}"
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

run install -d -m 0755 /etc/skiff
{
  echo "# Written by deploy/install.sh; read by $unit. Run install.sh again to change it."
  echo "SKIFF_ARGS=\"${args[*]}\""
  if [ -n "$token" ]; then echo "SKIFF_TOKEN=\"$token\""; fi
} | write_file "$env_file" 0600
run install -m 0644 "$deploy_dir/systemd/$unit" "/etc/systemd/system/$unit"
run systemctl daemon-reload
run systemctl enable "$unit"
# restart rather than start, so a second run picks up new binaries and flags.
run systemctl restart "$unit"

if [ "$role" = control-plane ] && ! $dry_run; then
  echo "=== waiting for $data_dir/admin.kubeconfig"
  for _ in $(seq 1 300); do
    [ -s "$data_dir/admin.kubeconfig" ] && break
    systemctl is-active --quiet "$unit" || break
    sleep 0.1
  done
  [ -s "$data_dir/admin.kubeconfig" ] || echo "warning: $unit has not written its kubeconfig yet; see journalctl -u $unit" >&2
fi

if $dry_run; then echo "=== dry run done"; else echo "=== done: $unit is enabled and started"; fi
echo "status:  systemctl status $unit"
echo "logs:    journalctl -u $unit -f"
if [ "$role" = control-plane ]; then
  echo "server token (join control-plane members): $data_dir/token"
  echo "agent token (join node agents):            $data_dir/agent-token"
  echo "export KUBECONFIG=$data_dir/admin.kubeconfig   # then: skiff get nodes"
  if ! $listen_peer; then
    echo "note: the store's peers listen on 127.0.0.1:2380 (the default); to add members on" \
      "other machines later, install with --listen-peer <this machine's IP>:2380"
  fi
else
  echo "check on a control-plane member: skiff get nodes"
fi

#!/usr/bin/env bash
# The high-availability demo: validate the example manifests offline, start a
# three-member control plane on 127.0.0.1, create the manifests through its API with
# skiff, kill the Raft leader with SIGKILL, and show the survivors elect a new one and
# still serve every object. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "=== building (release)"
cargo build --release --quiet -p skiff-ctl -p skiff-control-plane
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "=== skiff validate -f manifests/"
"$bin/skiff" validate -f manifests/

start_member() { # name port [join]
  local name=$1 port=$2 join=${3:-}
  "$bin/skiff-control-plane" --data-dir "$work/$name" --listen-peer "127.0.0.1:$port" \
    --listen-api "127.0.0.1:$((port + 100))" ${join:+--join "$join"} \
    >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q "serving peers" "$work/$name.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "member $name did not start; see $work/$name.log" >&2; return 1
}

echo "=== starting a three-member store on 127.0.0.1:23791-23793"
start_member a 23791
start_member b 23792 127.0.0.1:23791
start_member c 23793 127.0.0.1:23791
"$bin/skiff-control-plane" member list --peer 127.0.0.1:23791

kubectl_at() { # port args...
  local port=$1; shift
  KUBECONFIG=/dev/null kubectl --server "http://127.0.0.1:$port" --cache-dir "$work/kube-cache" "$@"
}
skiff_at() { # port args...
  local port=$1; shift
  KUBECONFIG=/dev/null "$bin/skiff" --server "http://127.0.0.1:$port" "$@"
}
echo "=== skiff apply -f manifests/ through member a's API (127.0.0.1:23891)"
skiff_at 23891 apply -f manifests/
skiff_at 23891 scale deployment/web -n demo --replicas=5

leader=$("$bin/skiff-control-plane" member list --peer 127.0.0.1:23791 | awk '$3 == "leader" {print $2}')
port=${leader##*:}
idx=$((port - 23791))
echo "=== kill -9 the leader at $leader"
kill -9 "${pids[$idx]}"
wait "${pids[$idx]}" 2>/dev/null || true
survivor=127.0.0.1:$((23791 + (idx + 1) % 3))
for _ in $(seq 1 100); do
  if "$bin/skiff-control-plane" member list --peer "$survivor" 2>/dev/null \
    | awk -v dead="$leader" '$3 == "leader" && $2 != dead {found=1} END {exit !found}'; then break; fi
  sleep 0.1
done
"$bin/skiff-control-plane" member list --peer "$survivor"
echo "=== the objects survived: skiff get deployments,services -A through $survivor's member"
skiff_at $((${survivor##*:} + 100)) get deployments,services -A -o wide
if command -v kubectl >/dev/null; then
  echo "=== and the real kubectl sees the same"
  kubectl_at $((${survivor##*:} + 100)) describe deployment web -n demo
fi
echo "=== demo done: a new leader took over and every object is still there"

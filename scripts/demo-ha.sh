#!/usr/bin/env bash
# The high-availability demo: validate the example manifests offline, start a
# three-member control plane on 127.0.0.1 (member a creates the cluster's CA and tokens,
# b and c join it over HTTPS with a's server token), create the manifests through its
# API with skiff, kill the Raft leader with SIGKILL, and show the survivors elect a new
# one, still serve every object, and run the controllers (the controller Lease moves).
# Everything it starts is stopped on exit.
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

# Member i (0, 1, 2) is named a, b, c, serves peers on 127.0.0.1:2379(1+i) and the API
# on 127.0.0.1:2389(1+i); all state is under $work/<name>.
names=(a b c)
peer_port() { echo $((23791 + $1)); }
api_port() { echo $((23891 + $1)); }
start_member() { # index [join flags...]
  local idx=$1 name=${names[$1]}
  shift
  "$bin/skiff-control-plane" --name "$name" --data-dir "$work/$name" \
    --listen-peer "127.0.0.1:$(peer_port "$idx")" --listen-api "127.0.0.1:$(api_port "$idx")" \
    "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -q "serving the API" "$work/$name.out" 2>/dev/null && return 0
    kill -0 "${pids[$idx]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "member $name did not start:" >&2
  cat "$work/$name.out" "$work/$name.log" >&2
  return 1
}
member_list() { # index of a live member
  "$bin/skiff-control-plane" member list --peer "127.0.0.1:$(peer_port "$1")" \
    --data-dir "$work/${names[$1]}"
}

echo "=== member a creates the cluster (peers 127.0.0.1:23791, API https://127.0.0.1:23891)"
start_member 0
cat "$work/a.out"
echo "=== members b and c join with --join https://127.0.0.1:23891 --token \$(cat $work/a/token)"
start_member 1 --join "https://127.0.0.1:$(api_port 0)" --token "$(cat "$work/a/token")"
start_member 2 --join "https://127.0.0.1:$(api_port 0)" --token "$(cat "$work/a/token")"
member_list 0

# Member a's admin kubeconfig (a client certificate in system:masters, and the CA) is
# valid at every member: --server picks the one to talk to.
export KUBECONFIG=$work/a/admin.kubeconfig
skiff_at() { # index args...
  local idx=$1
  shift
  "$bin/skiff" --server "https://127.0.0.1:$(api_port "$idx")" "$@"
}
kubectl_at() { # index args...
  local idx=$1
  shift
  kubectl --server "https://127.0.0.1:$(api_port "$idx")" --cache-dir "$work/kube-cache" "$@"
}
echo "=== skiff apply -f manifests/ through member a's API (https://127.0.0.1:23891)"
skiff_at 0 apply -f manifests/
skiff_at 0 scale deployment/web -n demo --replicas=5

leader=$(member_list 0 | awk '$3 == "leader" {print $2}')
[ -n "$leader" ] || { echo "no leader in the member list" >&2; exit 1; }
dead=$((${leader##*:} - 23791))
survivor=$(((dead + 1) % 3))
if command -v kubectl >/dev/null; then
  holder=$(kubectl_at "$survivor" get lease skiff-controller-manager -n kube-system \
    -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  echo "=== the controllers run on member ${holder:-?} (holder of the Lease kube-system/skiff-controller-manager)"
fi
echo "=== kill -9 the Raft leader: member ${names[$dead]} at $leader"
kill -9 "${pids[$dead]}"
{ wait "${pids[$dead]}"; } 2>/dev/null || true
for _ in $(seq 1 100); do
  if member_list "$survivor" 2>/dev/null \
    | awk -v dead="$leader" '$3 == "leader" && $2 != dead {found=1} END {exit !found}'; then break; fi
  sleep 0.1
done
member_list "$survivor"

echo "=== the objects survived: skiff get deployments,services -A through member ${names[$survivor]}"
skiff_at "$survivor" get deployments,services -A -o wide

echo "=== writes and controllers go on: scale web to 2 through member ${names[$survivor]}"
# No agents run here, so the pods stay Pending, but the ReplicaSet controller (on
# whichever survivor now holds the Lease, within its 15 s duration) deletes the extra ones.
skiff_at "$survivor" scale deployment/web -n demo --replicas=2
for _ in $(seq 1 600); do
  [ "$(skiff_at "$survivor" get pods -n demo -l app=web -o name 2>/dev/null | wc -l)" -eq 2 ] && break
  sleep 0.1
done
skiff_at "$survivor" get pods -n demo -l app=web
[ "$(skiff_at "$survivor" get pods -n demo -l app=web -o name | wc -l)" -eq 2 ] \
  || { echo "the web pods did not go down to 2 within 60 s" >&2; exit 1; }

if command -v kubectl >/dev/null; then
  echo "=== and the real kubectl sees the same; the Lease has a live holder"
  kubectl_at "$survivor" describe deployment web -n demo
  kubectl_at "$survivor" get lease skiff-controller-manager -n kube-system
fi
echo "=== demo done: a new leader took over and every object is still there"

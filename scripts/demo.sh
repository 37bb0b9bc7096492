#!/usr/bin/env bash
# The first try: build Skiff, start a one-node cluster with `skiff up` (control plane,
# scheduler, controllers and a node agent in one process), apply manifests/, wait until
# the demo's deployments have rolled out, fetch a page from a pod, scale, roll out a
# change and delete it all. Needs root (containers use kernel namespaces and cgroups).
# Everything it starts is stopped on exit, containers included.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: containers need kernel namespaces, cgroups and mounts" >&2
  exit 1
fi
# busybox-static is the demo image's content; libseccomp-dev and pkg-config build the
# runtime.
packages=(busybox-static libseccomp-dev pkg-config)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "=== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "=== building (release)"
cargo build --release --quiet -p skiff-ctl
skiff=$PWD/target/release/skiff
work=$(mktemp -d)
listen=127.0.0.1:${SKIFF_PORT:-6443}
"$skiff" up --data-dir "$work" --listen "$listen" >"$work/up.out" 2>&1 &
up=$!
cleanup() {
  kill -INT "$up" 2>/dev/null || true
  wait "$up" 2>/dev/null || true
  cat "$work/up.out" | sed -n '/stopping/,$p'
  rm -rf "$work"
}
trap cleanup EXIT

echo "=== skiff up --data-dir $work --listen $listen"
for _ in $(seq 1 300); do
  grep -q "cluster is running" "$work/up.out" 2>/dev/null && break
  kill -0 "$up" 2>/dev/null || { cat "$work/up.out"; exit 1; }
  sleep 0.1
done
cat "$work/up.out"
export KUBECONFIG=$work/kubeconfig
for _ in $(seq 1 100); do "$skiff" get nodes 2>/dev/null | grep -q " Ready" && break; sleep 0.1; done
"$skiff" get nodes -o wide

echo "=== skiff apply -f manifests/"
"$skiff" apply -f manifests/
"$skiff" rollout status deployment/web -n demo --timeout=120s
"$skiff" rollout status deployment/api -n demo --timeout=120s
"$skiff" get pods -n demo -o wide

pod=$("$skiff" get pods -n demo -l app=web -o name | head -1)
echo "=== kubectl exec -n demo $pod -- wget -qO- http://127.0.0.1/"
kubectl exec -n demo "$pod" -- wget -qO- http://127.0.0.1/

echo "=== skiff scale deployment/web -n demo --replicas=5"
"$skiff" scale deployment/web -n demo --replicas=5
"$skiff" rollout status deployment/web -n demo --timeout=120s

echo "=== a rolling update: new pod template, one pod at a time (maxSurge 1, maxUnavailable 0)"
kubectl set env deployment/web -n demo GREETING=hi
"$skiff" rollout status deployment/web -n demo --timeout=180s
"$skiff" get replicasets -n demo
kubectl get pods -n demo

echo "=== skiff delete namespace demo"
"$skiff" delete namespace demo
echo "=== done: the cluster stops now"

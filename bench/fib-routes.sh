#!/usr/bin/env bash
# Why weftd's peer routes point at nexthop objects (BENCHMARKS.md, "scale"): times adding K
# peer routes to a VXLAN device with `ip -batch`, in flanneld's form (each route with its own
# gateway) and through one nexthop object per peer, in a network namespace of its own.
#
#   bench/fib-routes.sh [K ...]        (root; default K: 1000 5000 10000)
#
# Prints one line per K and form: `fib_routes_<form>_k<K>_ms <ms>`.
set -euo pipefail

ns="weft-fib-$$"
batch="$(mktemp)"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -f "$batch"; }
trap cleanup EXIT

# One peer per /24 from 10.100.0.0 up; the gateway is the subnet's network address.
peers() {
  local k=$1 i
  for ((i = 0; i < k; i++)); do
    echo "10.$((100 + i / 256)).$((i % 256)).0"
  done
}

run() {
  local form=$1 k=$2 start end
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add flannel.1 type vxlan id 1 dstport 8472 nolearning
  ip -n "$ns" link set flannel.1 up
  ip -n "$ns" addr add 10.99.0.0/32 dev flannel.1
  local id=0
  : > "$batch"
  for gw in $(peers "$k"); do
    id=$((id + 1))
    if [[ $form == gateway ]]; then
      echo "route replace $gw/24 via $gw dev flannel.1 onlink" >> "$batch"
    else
      echo "nexthop replace id $id via $gw dev flannel.1 onlink" >> "$batch"
      echo "route replace $gw/24 nhid $id" >> "$batch"
    fi
  done
  start=$(date +%s%N)
  ip -n "$ns" -batch "$batch"
  end=$(date +%s%N)
  echo "fib_routes_${form}_k${k}_ms $(((end - start) / 1000000))"
  ip netns del "$ns"
}

ks=("$@")
[[ ${#ks[@]} -gt 0 ]] || ks=(1000 5000 10000)
for k in "${ks[@]}"; do
  for form in gateway nexthop; do
    run "$form" "$k"
  done
done

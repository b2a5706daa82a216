#!/usr/bin/env bash
# Checks the overlay from this VM: a fresh container pings the weft-check container on the peer
# VM, whose address is the .2 of the subnet leased to the peer's PublicIP.
set -euo pipefail

: "${WEFT_ETCD_IP:?}" "${WEFT_PEER_IP:?}"
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="http://${WEFT_ETCD_IP}:2379"
lease=$(etcdctl get --prefix /coreos.com/network/subnets/ | grep -B1 "\"PublicIP\":\"${WEFT_PEER_IP}\"" | head -n1)
subnet=${lease##*/}             # e.g. 10.1.42.0-24
network=${subnet%-*}            # 10.1.42.0
target="${network%.*}.$(( ${network##*.} + 2 ))"
echo "pinging the container on ${WEFT_PEER_IP} at ${target} from a container here"
docker run --rm busybox ping -c 3 -W 2 "$target"
echo "overlay OK"

#!/usr/bin/env bash
# Provisions one VM: etcd (on the first VM only), the network config, weftd with its systemd
# unit, and docker started from weftd's options. Runs as root inside the VM.
set -euo pipefail

: "${WEFT_NODE_IP:?}" "${WEFT_ETCD_IP:?}" "${WEFT_IS_ETCD:?}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends etcd-client docker.io iproute2

if [ "$WEFT_IS_ETCD" = 1 ]; then
  apt-get install -y -q --no-install-recommends etcd-server
  cat > /etc/default/etcd <<ETCD
ETCD_NAME=weft1
ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379
ETCD_ADVERTISE_CLIENT_URLS=http://${WEFT_ETCD_IP}:2379
ETCD
  systemctl restart etcd
fi

export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="http://${WEFT_ETCD_IP}:2379"
until etcdctl endpoint health >/dev/null 2>&1; do sleep 1; done
if [ -z "$(etcdctl get /coreos.com/network/config --print-value-only)" ]; then
  etcdctl put /coreos.com/network/config '{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}'
fi

install -m 0755 /vagrant/target/x86_64-unknown-linux-gnu/release/weftd /usr/local/bin/weftd
install -d /etc/weft /etc/systemd/system/docker.service.d
cat > /etc/weft/weftd.env <<ENV
FLANNELD_ETCD_ENDPOINTS=http://${WEFT_ETCD_IP}:2379
FLANNELD_IFACE=${WEFT_NODE_IP}
FLANNELD_NAMES=true
ENV
install -m 0644 /vagrant/dist/weftd.service /etc/systemd/system/weftd.service
install -m 0644 /vagrant/dist/docker.service.d/40-weft.conf /etc/systemd/system/docker.service.d/40-weft.conf
systemctl daemon-reload
systemctl enable --now weftd.service
systemctl restart docker.service

cat /run/flannel/subnet.env
# A long-lived container to be pinged from the other VMs: the first container on a fresh
# bridge takes the subnet's .2 address.
docker rm -f weft-check >/dev/null 2>&1 || true
docker run -d --name weft-check busybox sleep 86400
docker inspect -f '{{.NetworkSettings.IPAddress}}' weft-check

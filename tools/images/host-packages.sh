#!/usr/bin/env bash
# Installs the Debian packages the local node and the image build need, only when one is missing, so a
# second `make setup` spends no time here: containerd and runc run the node's containers, buildah and
# mmdebstrap build the images without a registry or a Docker engine. tests/e2e/test_servers.py runs
# nginx, HAProxy and a Java server (it needs javac) behind trust-sync; each is installed only when its
# command is missing, so a machine's own nginx or JDK (any 11 or later) is kept. gpg is the judge of
# the bundles sealed with OpenPGP (tests/provider_keys.py), as a provider would open them. Debian's
# prometheus brings promtool, which unit-tests the chart's alerts (tests/unit/test_chart_alerts.py), and
# the server one test runs against the operator's metrics (tests/integration/test_prometheus.py); the
# tests start their own on loopback (a machine with systemd may also start the packaged service).
set -euo pipefail
packages=(containerd runc buildah mmdebstrap)
command -v nginx >/dev/null 2>&1 || packages+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || packages+=(haproxy)
command -v javac >/dev/null 2>&1 || packages+=(default-jdk-headless)
command -v gpg >/dev/null 2>&1 || packages+=(gnupg)
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "host-packages.sh: ${missing[*]} missing and no apt-get here; install them with your package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "host-packages.sh: installing ${missing[*]} ..." >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null

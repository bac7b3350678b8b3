#!/usr/bin/env bash
# Install the Debian packages hostsec's tests, demo and benchmarks need (only those missing).
# Run as root on Debian 12; as another user it only reports what is missing.
set -euo pipefail

packages=(
    python3 python3-venv python3-dev gcc make    # the virtualenv; python-pytun compiles
    iproute2 nftables iputils-ping                # namespaces, veth, policy routing, firewall
    tcpdump tshark                                # captures and their dissection in tests
    iperf3                                        # scripts/bench_tunnel.py
    strongswan-swanctl charon-systemd strongswan-charon libcharon-extra-plugins
    libstrongswan-extra-plugins strongswan-pki    # the interop peer (kernel-libipsec)
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-debian: not root, not installing: ${missing[*]} (root-only tests will be skipped)" >&2
    exit 0
fi
echo "setup-debian: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; the answer does not matter here.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# charon-systemd's unit would start a system-wide charon on installation in some setups:
# the tests run their own charons in namespaces, never the system one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet strongswan 2>/dev/null; then
    systemctl stop strongswan || true
fi

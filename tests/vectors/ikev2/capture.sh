#!/bin/bash
# capture.sh - record real IKEv2 datagrams between two strongSwan 5.9 charons for the codec tests.
#
# Derived from ../shared/interop/run-pair.sh (same charon recipe: charon-systemd, kernel-libipsec,
# private STRONGSWAN_CONF and vici socket), but with its own namespace and link names (ikwA, ikwB,
# ikwvA, ikwvB) so that it never disturbs a run-pair.sh in progress. Addresses: 198.51.100.1 (A,
# initiator) and 198.51.100.2 (B, responder). Every mode starts in fresh namespaces; everything
# is torn down on exit; processes are ended by PID.
#
# usage (root): capture.sh [psk|cert|invalidke|cookie ...]     default: all four (cookie needs psk's capture)
# output: $CAP_DIR/<mode>.pcapng and <mode>.A.log (charon log of A, ike level 4: it prints the
#         IKE SA keys, which the tests use to check the SK associated data and decryption)
# then: python3 extract.py $CAP_DIR  -> ikev2_strongswan.json (datagrams as hex + keys)
set -u
CAP_DIR=${CAP_DIR:-${TMPDIR:-/tmp}/hostsec-ikewire}
HERE=$(cd "$(dirname "$0")" && pwd)
IPA=198.51.100.1
IPB=198.51.100.2
PSK="ikewire-test-psk-0123456789"
mkdir -p "$CAP_DIR"

kill_pid() { # pidfile
  local f=$1 p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if [ -n "$p" ] && [ -d /proc/$p ]; then
    kill "$p" 2>/dev/null
    for _ in $(seq 1 25); do [ -d /proc/$p ] || break; sleep 0.2; done
    [ -d /proc/$p ] && kill -9 "$p" 2>/dev/null
  fi
  rm -f "$f"
}

down() {
  kill_pid $CAP_DIR/tshark.pid
  for S in A B; do kill_pid $CAP_DIR/$S/daemon.pid; done
  for n in ikwA ikwB; do
    if ip netns list | grep -qw "$n"; then
      for p in $(ip netns pids $n 2>/dev/null); do kill "$p" 2>/dev/null; done
      sleep 0.3
      for p in $(ip netns pids $n 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      ip netns del $n
    fi
  done
  ip link del ikwvA 2>/dev/null || true
}

netns_up() {
  ip netns add ikwA
  ip netns add ikwB
  ip link add ikwvA type veth peer name ikwvB
  ip link set ikwvA netns ikwA
  ip link set ikwvB netns ikwB
  ip -n ikwA addr add $IPA/24 dev ikwvA
  ip -n ikwB addr add $IPB/24 dev ikwvB
  for S in A B; do
    ip netns exec ikw$S sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n ikw$S link set lo up
    ip -n ikw$S link set ikwv$S up
  done
}

gen_pki() {
  [ -f $CAP_DIR/pki/b.crt ] && return 0
  mkdir -p $CAP_DIR/pki; cd $CAP_DIR/pki || exit 1
  export STRONGSWAN_CONF=$CAP_DIR/pki/pki.conf
  printf 'pki {\n  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey gmp sha1 sha2\n}\n' > pki.conf
  pki --gen --type rsa --size 2048 --outform pem > ca.key
  pki --self --ca --lifetime 3650 --in ca.key --type rsa \
      --dn "C=XX, O=hostsec-ikewire, CN=Ikewire Test CA" --outform pem > ca.crt
  for h in a b; do
    local ip=$IPA; [ $h = b ] && ip=$IPB
    pki --gen --type rsa --size 2048 --outform pem > $h.key
    pki --pub --in $h.key --type rsa | pki --issue --lifetime 365 --cacert ca.crt --cakey ca.key \
      --dn "C=XX, O=hostsec-ikewire, CN=$h.test" --san $h.test --san $ip \
      --flag serverAuth --flag clientAuth --outform pem > $h.crt
  done
  unset STRONGSWAN_CONF
  cd - >/dev/null || true
}

gen_side() { # A|B mode
  local S=$1 M=$2 L R LN RN LP RP PROPS EXTRA="" AUTH=psk CERTS=""
  if [ $S = A ]; then L=$IPA R=$IPB LN=a RN=b LP="" RP="/23"; else L=$IPB R=$IPA LN=b RN=a LP="/23" RP=""; fi
  PROPS="aes256-sha256-modp2048, aes128-sha256-ecp256, aes128gcm16-prfsha256-curve25519"
  case $M in
    cert) PROPS="aes128gcm16-prfsha256-ecp256"; AUTH=pubkey; CERTS="certs = $LN.crt" ;;
    invalidke) [ $S = B ] && PROPS="aes128gcm16-prfsha256-ecp256, aes128-sha256-ecp256" ;;
    cookie) [ $S = B ] && EXTRA="cookie_threshold = 1
  cookie_threshold_ip = 1" ;;
  esac
  local D=$CAP_DIR/$S
  rm -rf $D; mkdir -p $D/run $D/swanctl
  for d in x509 x509ca private; do mkdir -p $D/swanctl/$d; done
  cp $CAP_DIR/pki/ca.crt $D/swanctl/x509ca/ca.crt
  cp $CAP_DIR/pki/$LN.crt $D/swanctl/x509/$LN.crt
  cp $CAP_DIR/pki/$LN.key $D/swanctl/private/$LN.key; chmod 600 $D/swanctl/private/$LN.key
  cat > $D/strongswan.conf <<EOC
charon {
  load = random nonce openssl aes sha1 sha2 hmac kdf gcm gmp curve25519 pem pkcs1 pkcs8 x509 pubkey revocation constraints kernel-libipsec kernel-netlink socket-default vici updown
  install_virtual_ip = no
  $EXTRA
  filelog {
    log {
      path = $D/charon.log
      append = no
      time_format = %T
      flush_line = yes
      default = 1
      ike = 4
      enc = 1
      cfg = 1
    }
  }
  plugins {
    vici { socket = unix://$D/run/charon.vici }
    kernel-libipsec { allow_peer_ts = yes }
    socket-default { fwmark = 0x42 }
    kernel-netlink { fwmark = !0x42 }
  }
}
EOC
  cat > $D/swanctl/swanctl.conf <<EOC
connections {
  v2 {
    version = 2
    local_addrs = $L
    remote_addrs = $R
    proposals = $PROPS
    fragmentation = yes
    local {
      auth = $AUTH
      $CERTS
      id = $LN.test
    }
    remote {
      auth = $AUTH
      id = $RN.test
    }
    children {
      tun23 {
        mode = tunnel
        local_ts = $L/32[tcp$LP]
        remote_ts = $R/32[tcp$RP]
        esp_proposals = aes128gcm16, aes256-sha256
      }
    }
  }
}
secrets {
  ike-any {
    secret = "$PSK"
  }
}
EOC
}

sw() { # side swanctl-args...
  local S=$1; shift
  ip netns exec ikw$S env SWANCTL_DIR=$CAP_DIR/$S/swanctl STRONGSWAN_CONF=$CAP_DIR/$S/strongswan.conf \
     swanctl "$@" -u unix://$CAP_DIR/$S/run/charon.vici
}

start_charon() { # side
  local S=$1 D=$CAP_DIR/$1
  ip netns exec ikw$S env STRONGSWAN_CONF=$D/strongswan.conf /usr/sbin/charon-systemd > $D/daemon.stdout 2>&1 &
  echo $! > $D/daemon.pid
  for _ in $(seq 1 50); do [ -S $D/run/charon.vici ] && return 0; sleep 0.1; done
  echo "vici socket of $S did not appear"; return 1
}

run_mode() { # mode
  local M=$1
  echo "=== $M"
  down
  netns_up
  gen_pki >/dev/null 2>&1
  gen_side A $M; gen_side B $M
  start_charon A || return 1; start_charon B || return 1
  sw A --load-all >/dev/null 2>&1; sw B --load-all >/dev/null 2>&1
  rm -f $CAP_DIR/$M.pcapng
  ip netns exec ikwB tshark -i ikwvB -n -q -w $CAP_DIR/$M.pcapng > $CAP_DIR/tshark.stderr 2>&1 &
  echo $! > $CAP_DIR/tshark.pid
  for _ in $(seq 1 50); do grep -q 'Capturing on' $CAP_DIR/tshark.stderr 2>/dev/null && break; sleep 0.1; done
  sleep 0.3
  if [ $M = cookie ]; then
    # a half-open IKE_SA from another port first, so that B's next IKE_SA_INIT gets a COOKIE
    tshark -r $CAP_DIR/psk.pcapng -Y 'isakmp.exchangetype == 34 && isakmp.rspi == 00:00:00:00:00:00:00:00' \
        -T fields -e udp.payload 2>/dev/null | head -1 > $CAP_DIR/halfopen.hex
    ip netns exec ikwA python3 "$HERE/halfopen.py" $IPB "$CAP_DIR/halfopen.hex"
  fi
  sw A --initiate --ike v2 --child tun23 --timeout 15 > $CAP_DIR/$M.initiate.txt 2>&1
  echo "  initiate rc=$?"
  if [ $M = psk ]; then
    sw A --rekey --child tun23 > /dev/null 2>&1; echo "  rekey child rc=$?"
    sleep 0.5
    sw A --rekey --ike v2 > /dev/null 2>&1; echo "  rekey ike rc=$?"
    sleep 0.5
  fi
  sw A --terminate --ike v2 --timeout 5 > /dev/null 2>&1; echo "  terminate rc=$?"
  sleep 0.5
  kill_pid $CAP_DIR/tshark.pid
  cp $CAP_DIR/A/charon.log $CAP_DIR/$M.A.log
  cp $CAP_DIR/B/charon.log $CAP_DIR/$M.B.log
  tshark -r $CAP_DIR/$M.pcapng -Y isakmp 2>/dev/null | sed 's/^/    /'
}

[ "$(id -u)" = 0 ] || { echo "must run as root"; exit 1; }
if [ "${1:-}" = down ]; then down; exit 0; fi
MODES=("$@"); [ ${#MODES[@]} = 0 ] && MODES=(psk cert invalidke cookie)
trap down EXIT
for m in "${MODES[@]}"; do run_mode "$m"; done

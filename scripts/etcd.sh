#!/usr/bin/env bash
# etcd for the failover tests and trials (README, "Failover without split brain").
#
#   scripts/etcd.sh install      Debian's etcd-server (apt-get); nothing to do when `etcd` is on PATH
#   scripts/etcd.sh start [DIR]  a one-member etcd on free loopback ports, data in DIR (default: a new
#                                temporary folder); prints ETCD_ENDPOINT=... and ETCD_DIR=... for eval
#   scripts/etcd.sh stop DIR     stops the server started with that DIR and removes DIR
#
# The tests start and stop their own etcd (lib/checkpoint/etcd-server.ts) whenever the binary
# is installed; `start` is for trials by hand: KVM_DIRTY_ETCD=$ETCD_ENDPOINT npm test uses it.
set -euo pipefail

die() { echo "etcd.sh: $*" >&2; exit 1; }

free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

case "${1:-}" in
  install)
    if command -v etcd >/dev/null; then
      echo "etcd.sh: $(command -v etcd) is installed ($(etcd --version | head -n1))"
      exit 0
    fi
    [ "$(id -u)" = 0 ] || die "installing etcd-server needs root (apt-get); run as root or install it yourself"
    echo "etcd.sh: installing Debian's etcd-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
    command -v etcd >/dev/null || die "apt-get installed etcd-server but there is no etcd on PATH"
    echo "etcd.sh: installed $(etcd --version | head -n1)"
    ;;
  start)
    command -v etcd >/dev/null || die "no etcd on PATH: run scripts/etcd.sh install"
    dir="${2:-$(mktemp -d "${TMPDIR:-/tmp}/kvm-dirty-etcd-XXXXXX")}"
    mkdir -p "$dir"
    client=$(free_port); peer=$(free_port)
    # Short heartbeat and election timeout: etcd then accepts leases of 1 s (its minimum TTL is
    # ceil(1.5 x election timeout), 2 s with the defaults).
    setsid etcd --name kvm-dirty --data-dir "$dir/data" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "kvm-dirty=http://127.0.0.1:$peer" \
      --heartbeat-interval 50 --election-timeout 250 --log-level warn \
      </dev/null >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/pid"
    echo "http://127.0.0.1:$client" >"$dir/endpoint"
    for _ in $(seq 1 200); do
      if node -e 'fetch(process.argv[1]).then((r) => r.json()).then((j) => process.exit(j.health === "true" ? 0 : 1), () => process.exit(1))' "http://127.0.0.1:$client/health"; then
        echo "ETCD_ENDPOINT=http://127.0.0.1:$client"
        echo "ETCD_DIR=$dir"
        exit 0
      fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/etcd.log" >&2; die "etcd exited"; }
      sleep 0.1
    done
    cat "$dir/etcd.log" >&2
    die "etcd did not become healthy in 20 s"
    ;;
  stop)
    dir="${2:-}"
    [ -n "$dir" ] && [ -f "$dir/pid" ] || die "usage: scripts/etcd.sh stop DIR (the DIR that start printed)"
    pid=$(cat "$dir/pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    echo "etcd.sh: stopped etcd $pid"
    ;;
  *)
    die "usage: scripts/etcd.sh install | start [DIR] | stop DIR"
    ;;
esac

#!/usr/bin/env bash
# How fast a fleet converges: a real etcd and three banyan replicas on loopback sharing
# their state through it; ROUNDS rollback/resume pairs, each sent through a different
# replica with the `banyan` CLI. A cycle's time runs from the command's start until every
# replica has been seen serving the new decision (a request for a target-bound user to
# each one, repeated until it answers from the expected side). p50, p99 and the worst of
# all 2 × ROUNDS changes; the target is p99 < 100 ms.
#
#   benches/fleet.sh <banyan binary> [rounds, default 50]
#
# Needs etcd (Debian's etcd-server), nginx, curl. Everything listens on 127.0.0.1 and is
# stopped on exit; results also go to benches/results/fleet-<time>.md.
set -euo pipefail

BIN=$(realpath "$1")
ROUNDS=${2:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=fleet
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need etcd nginx curl

UP_MONO=18681 UP_ORDERS=18682 ETCD_CLIENT=18679 ETCD_PEER=18678
mkdir -p "$WORK/up" "$WORK/etcd"
json_upstreams "$WORK/up" "$UP_MONO" '{"served_by":"monolith"}' "$UP_ORDERS" '{"served_by":"orders"}'
etcd --name bench --data-dir "$WORK/etcd/data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" --logger zap --log-level error > /dev/null 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$ETCD_CLIENT/health"

PORTS=(18690 18691 18692) ADMINS=(18695 18696 18697)
for i in 0 1 2; do
  dir="$WORK/r$i"
  mkdir -p "$dir/config" "$dir/routes"
  banyan_config "$dir" "${PORTS[$i]}" "${ADMINS[$i]}" "$UP_MONO" "$UP_ORDERS"
  cat >> "$dir/config/banyan.toml" <<CONF
[state]
store = "etcd"
endpoints = ["http://127.0.0.1:$ETCD_CLIENT"]
prefix = "/banyan/bench"
replica = "r$i"
CONF
  orders_route "$dir/routes/orders.toml"
  (cd "$dir" && exec "$BIN" run > /dev/null 2>&1) & PIDS+=($!)
done
for i in 0 1 2; do wait_http "http://127.0.0.1:${ADMINS[$i]}/healthz"; done
for _ in $(seq 1 100); do
  [ "$(curl -s "http://127.0.0.1:${ADMINS[0]}/api/v1/fleet" | grep -c '"replica": "r')" -ge 4 ] && break
  sleep 0.1
done

# A user the 20 % split sends to the target.
user=""
for n in $(seq 1 200); do
  if (cd "$WORK/r0" && "$BIN" explain --offline --json GET /api/orders/1 -H "x-user-id: user-$n") | grep -q '"backend": "target"'; then
    user="user-$n"; break
  fi
done
[ -n "$user" ] || { echo "no target-bound user found" >&2; exit 1; }

serves() { # port side: whether that replica serves the user from that side
  curl -s -H "x-user-id: $user" "http://127.0.0.1:$1/api/orders/1" | grep -q "\"served_by\":\"$2\""
}

: > "$WORK/ms"
for r in $(seq 1 "$ROUNDS"); do
  for op in rollback resume; do
    via=$(( (r + ${#op}) % 3 ))
    want=monolith; [ "$op" = resume ] && want=orders
    t0=$(date +%s%N)
    "$BIN" "$op" orders --admin "http://127.0.0.1:${ADMINS[$via]}" > /dev/null
    for port in "${PORTS[@]}"; do
      for _ in $(seq 1 2000); do serves "$port" "$want" && break; done
    done
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 )) >> "$WORK/ms"
  done
done

pct() { sort -n "$WORK/ms" | awk -v p="$1" '{v[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; printf "%.1f", v[i]/1000}'; }
{
  echo "# Fleet convergence, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: benches/fleet.sh $BIN $ROUNDS ($(nproc) cores): three replicas and etcd on loopback"
  echo
  echo "| changes | p50 | p99 | worst |"
  echo "|---|---|---|---|"
  echo "| $(wc -l < "$WORK/ms") | $(pct 50) ms | $(pct 99) ms | $(pct 100) ms |"
} | tee "$ROOT/benches/results/fleet-$(date -u +%Y%m%dT%H%M).md"

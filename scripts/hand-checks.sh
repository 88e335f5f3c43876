#!/usr/bin/env bash
# The replication checks an operator runs by hand (issue "Replication you can
# bet data on", done-means), scripted: real `mlsd` and `mlsc` binaries (the
# release ones by default), three nodes on loopback, each check in a fresh
# temp dir. Exits non-zero at the first check that fails.
#
#   scripts/hand-checks.sh [big|wiped|failover|all]   (BIN=target/debug to use debug binaries)
#
# big:      replicas = 3, shards = 1; nine members; six send 120 KB to the
#           group at once, then one small message; every member reads all
#           seven, `mlsd cluster status` exits 0.
# wiped:    alice and bob registered, a message queued for bob; all three
#           stopped, n1's and n2's data dirs deleted, n1 and n2 started alone:
#           a stranger cannot register alice; n3 back: the binding and the
#           queued message are there.
# failover: n2 SIGKILLed, its data dir deleted, restarted; status exits 0
#           and leaders spread (no node leads more than 8 of the 20 shards,
#           within 120 s); n3 SIGKILLed; lookups and receives through n2
#           succeed within the client's retry.
set -euo pipefail

BIN=${BIN:-target/release}
BIN=$(cd "$BIN" && pwd)
WHAT=${1:-all}
PIDS=()

fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() { for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# setup DIR SHARDS: writes DIR/cluster.toml for n1..n3 on free ports, starts
# the three nodes and waits until the cluster is healthy.
setup() {
    local dir=$1 shards=$2 base
    base=$((20000 + RANDOM % 20000))
    cat >"$dir/cluster.toml" <<EOF
[cluster]
name = "hand"
certs_dir = "certs"
replicas = 3
shards = $shards
EOF
    for i in 1 2 3; do
        cat >>"$dir/cluster.toml" <<EOF
[[node]]
name = "n$i"
listen = "127.0.0.1:$((base + i))"
roles = ["as", "cs", "ids", "ods", "sds"]
data_dir = "data/n$i"
EOF
    done
    "$BIN/mlsd" certs --config "$dir/cluster.toml" >/dev/null
    for n in n1 n2 n3; do start "$dir" $n; done
    wait_healthy "$dir" 60
}

addr() { grep -A1 "name = \"$2\"" "$1/cluster.toml" | sed -n 's/listen = "\(.*\)"/\1/p'; }

declare -A NODE_PID
start() { # DIR NODE
    "$BIN/mlsd" run --config "$1/cluster.toml" --node "$2" 2>>"$1/$2.log" >/dev/null &
    NODE_PID[$2]=$!
    PIDS+=($!)
}
kill9() { kill -9 "${NODE_PID[$2]}" 2>/dev/null || true; wait "${NODE_PID[$2]}" 2>/dev/null || true; }

status_ok() { "$BIN/mlsd" cluster status --config "$1/cluster.toml" >"$1/status.txt" 2>&1; }
wait_healthy() { # DIR SECONDS
    local until=$((SECONDS + $2))
    while ! status_ok "$1"; do
        [ $SECONDS -lt $until ] || { cat "$1/status.txt"; fail "not healthy within $2 s"; }
        sleep 1
    done
}

# leaders DIR: how many shards each node leads, from the last status.
leaders() { grep -o 'leader=n[0-9]' "$1/status.txt" | sort | uniq -c | tr -s ' ' | tr '\n' ' '; }

# wait_spread DIR SECONDS: until the cluster is healthy and no node leads
# more than 8 of the 20 shards (balance_leaders hands them over one at a
# time per node, about 2 s each at the default timings).
wait_spread() {
    local until=$((SECONDS + $2))
    until status_ok "$1" && [ "$(grep -o 'leader=n[0-9]' "$1/status.txt" | sort | uniq -c | sort -rn | awk 'NR==1 {print $1}')" -le 8 ]; do
        [ $SECONDS -lt $until ] || fail "leaders not spread within $2 s: $(leaders "$1")"
        sleep 1
    done
}

mlsc() { # DIR HOME VIA ARGS...
    local dir=$1 home=$2 via=$3
    shift 3
    "$BIN/mlsc" --home "$dir/homes/$home" --server "$(addr "$dir" "$via")" \
        --ca "$dir/certs/ca.pem" --as-key "$dir/certs/as.pub" "$@"
}

big() {
    local dir
    dir=$(mktemp -d)
    echo "== big: 120 KB to nine members, shards = 1 ($dir)"
    setup "$dir" 1
    for i in $(seq 1 9); do mlsc "$dir" m$i n$(((i % 3) + 1)) register m$i >/dev/null; done
    mlsc "$dir" m1 n1 group create G >/dev/null
    mlsc "$dir" m1 n1 group add G m2 m3 m4 m5 m6 m7 m8 m9 >/dev/null
    for i in $(seq 2 9); do mlsc "$dir" m$i n2 recv >/dev/null; done
    local t0=$SECONDS senders=()
    for i in $(seq 1 6); do
        (mlsc "$dir" m$i n$(((i % 3) + 1)) send G "big $i $(head -c 120000 /dev/zero | tr '\0' x)" \
            >"$dir/send$i.out" 2>&1 || echo "send $i failed" >>"$dir/failed") &
        senders+=($!)
    done
    wait "${senders[@]}"
    [ ! -f "$dir/failed" ] || { cat "$dir"/send*.out; fail "a 120 KB send failed"; }
    echo "six 120 KB sends acknowledged in $((SECONDS - t0)) s"
    mlsc "$dir" m1 n1 send G small >/dev/null || fail "the small send failed"
    for i in $(seq 1 9); do
        local got
        got=$(mlsc "$dir" m$i n3 recv | grep -c '^G m' || true)
        # Each member reads the others' sends: six big (five for a big
        # sender) and m1's small one (none for m1).
        local want=7
        [ $i -le 6 ] && want=$((want - 1))
        [ $i -eq 1 ] && want=5
        [ "$got" -eq "$want" ] || fail "m$i read $got messages, expected $want"
    done
    wait_healthy "$dir" 30
    echo "every member read every message; status exits 0"
    for n in n1 n2 n3; do kill9 "$dir" $n; done
}

wiped() {
    local dir
    dir=$(mktemp -d)
    echo "== wiped: two data dirs deleted while the third is down ($dir)"
    setup "$dir" 4
    mlsc "$dir" alice n1 register alice >/dev/null
    mlsc "$dir" bob n2 register bob >/dev/null
    mlsc "$dir" alice n1 group create G >/dev/null
    mlsc "$dir" alice n1 group add G bob >/dev/null
    mlsc "$dir" bob n2 recv >/dev/null
    mlsc "$dir" alice n3 send G queued >/dev/null
    local before
    before=$(mlsc "$dir" alice n1 lookup alice)
    wait_healthy "$dir" 30
    for n in n1 n2 n3; do kill9 "$dir" $n; done
    rm -rf "$dir/data/n1" "$dir/data/n2"
    start "$dir" n1
    start "$dir" n2
    sleep 5
    if mlsc "$dir" stranger n1 register alice >"$dir/stranger.out" 2>&1; then
        cat "$dir/stranger.out"
        fail "a stranger registered alice on two empty replicas"
    fi
    echo "stranger refused: $(tail -1 "$dir/stranger.out")"
    ! status_ok "$dir" || fail "status healthy with two empty replicas"
    start "$dir" n3
    wait_healthy "$dir" 90
    [ "$(mlsc "$dir" alice n1 lookup alice)" = "$before" ] || fail "alice's binding changed"
    mlsc "$dir" bob n2 recv | grep -q '^G alice/default: queued' || fail "bob's queued message is gone"
    echo "binding and queued message back once n3 returned"
    for n in n1 n2 n3; do kill9 "$dir" $n; done
}

failover() {
    local dir
    dir=$(mktemp -d)
    echo "== failover: kill and wipe n2, restart, kill n3 ($dir)"
    setup "$dir" 4
    for i in $(seq 1 8); do mlsc "$dir" u$i n1 register u$i >/dev/null; done
    mlsc "$dir" u1 n1 group create G >/dev/null
    mlsc "$dir" u1 n1 group add G u2 >/dev/null
    mlsc "$dir" u2 n2 recv >/dev/null
    kill9 "$dir" n2
    rm -rf "$dir/data/n2"
    start "$dir" n2
    wait_healthy "$dir" 90
    echo "leaders once n2 caught up: $(leaders "$dir")"
    local spread_from=$SECONDS
    wait_spread "$dir" 120
    echo "leaders spread $((SECONDS - spread_from)) s later: $(leaders "$dir")"
    mlsc "$dir" u1 n1 send G "before n3 dies" >/dev/null
    kill9 "$dir" n3
    local t0=$SECONDS
    for i in $(seq 1 8); do
        mlsc "$dir" u1 n2 lookup u$i >/dev/null || fail "lookup u$i through n2 failed"
    done
    mlsc "$dir" u2 n2 recv | grep -q 'before n3 dies' || fail "u2's message not received through n2"
    echo "eight lookups and a receive through n2 succeeded in $((SECONDS - t0)) s after n3's death"
    for n in n1 n2; do kill9 "$dir" $n; done
}

case $WHAT in
big) big ;;
wiped) wiped ;;
failover) failover ;;
all) big && wiped && failover ;;
*) fail "unknown check $WHAT" ;;
esac
echo "hand checks passed: $WHAT"

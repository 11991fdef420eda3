#!/usr/bin/env bash
# Restore benchmark: how long each partition takes to rebuild its streams
# from the changelog (docs/BENCHMARKS.md, "Restore").
#
#   benches/restore/run.sh [EVENTS] [STREAMS]      (defaults 400000 20000)
#
# Starts its own broker in target/restore-broker (stopped on exit), loads
# EVENTS seeded events over STREAMS streams into a 4-partition topic, runs
# `livetally run` (dev profile, as `make test` builds it) until every event is
# consumed, stops it with SIGTERM, starts it again in the same group and prints
# the `partition state restored` lines of the second start.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${1:-400000}
STREAMS=${2:-20000}
DIR=target/restore-broker
LT=target/debug/livetally
cargo build -q -p livetally --bin livetally
rm -rf "$DIR"
trap 'deploy/local/kafka.sh stop "$DIR" >/dev/null 2>&1 || true' EXIT
B=$(deploy/local/kafka.sh start "$DIR" | tail -1)
T=restore
deploy/local/kafka.sh topic "$DIR" "$T.events" 4 >/dev/null
# Event times end an hour ago, so the live clock guard accepts them all.
START=$(( $(date +%s%3N) - EVENTS - 3600000 ))
"$LT" gen --brokers "$B" --topic "$T.events" --events "$EVENTS" --streams "$STREAMS" \
    --seed 5 --start-ts "$START" >/dev/null 2>&1
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for round in 1 2; do
    PORT=$(free_port)
    "$LT" run --brokers "$B" --topic "$T.events" --group "$T.group" \
        --rollup-topic "$T.rollups" --dlq-topic "$T.dlq" --http "127.0.0.1:$PORT" \
        > "$DIR/run-$round.log" 2>&1 &
    PID=$!
    while sleep 0.5; do
        if [ "$round" = 1 ]; then
            CONSUMED=$(curl -s "127.0.0.1:$PORT/metrics" | awk '/^livetally_events_consumed_total/ {print int($2)}')
            [ "${CONSUMED:-0}" -ge "$EVENTS" ] && break
        else
            [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/readyz")" = 200 ] && break
        fi
        kill -0 "$PID" 2>/dev/null || { echo "livetally exited; see $DIR/run-$round.log" >&2; exit 1; }
    done
    kill -TERM "$PID"
    wait "$PID" || true
done
sed 's/\x1b\[[0-9;]*m//g' "$DIR/run-2.log" | grep "partition state restored"

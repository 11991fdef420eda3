#!/usr/bin/env bash
# benches/e2e/catchup.sh BINARY TAG [N] -- one at-least-once catch-up of
# `BINARY run` over the topic `events` of an already running broker whose
# address is in $BROKER_ADDR_FILE (default /tmp/prof-broker.addr), preloaded
# with N records (default 3,000,000), each run with a fresh group and fresh
# output topics. Prints one line: wall seconds from process start until
# livetally_events_consumed_total >= N (polled every 0.2 s), the engine's CPU
# seconds and minor page faults from /proc, peak RSS, and two counters.
# Extra `run` flags go in $EXTRA (e.g. EXTRA="--config f.toml").
#
# For alternating A/B pairs of two builds on one broker, as in
# docs/BENCHMARKS.md ("29 November, morning"):
#   deploy/local/kafka.sh start /tmp/prof-broker | tail -1 > /tmp/prof-broker.addr
#   deploy/local/kafka.sh topic /tmp/prof-broker events 12
#   livetally gen --brokers "$(cat /tmp/prof-broker.addr)" --topic events --events 3000000 \
#     --streams 10000 --seed 1 --format json --duplicate-rate 0.02 --invalid-rate 0.005 \
#     --start-ts $(( $(date +%s%3N) - 3000000 - 3600000 )) --partitions 12
#   for i in 1 2 3; do benches/e2e/catchup.sh ./a a$i; benches/e2e/catchup.sh ./b b$i; done
set -euo pipefail
BIN=$1 TAG=$2 N=${3:-3000000}
B=$(cat "${BROKER_ADDR_FILE:-/tmp/prof-broker.addr}")
G=catchup-$TAG-$(date +%s%N)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=${TMPDIR:-/tmp}/catchup-$TAG.log
# shellcheck disable=SC2086  # EXTRA is a word list
"$BIN" run ${EXTRA:-} --brokers "$B" --topic events --group "$G" --rollup-topic "$G.r" \
  --dlq-topic "$G.d" --changelog-topic "$G.c" --http "127.0.0.1:$PORT" \
  --guarantee at-least-once >"$LOG" 2>&1 &
PID=$!
trap 'kill -KILL $PID 2>/dev/null || true' EXIT
T0=$(date +%s.%N)
DEADLINE=$((SECONDS + ${CATCHUP_TIMEOUT:-600}))
while :; do
  sleep 0.2
  ((SECONDS < DEADLINE)) || { echo "$TAG: not caught up after ${CATCHUP_TIMEOUT:-600} s; see $LOG" >&2; exit 1; }
  kill -0 $PID 2>/dev/null || { echo "$TAG: livetally exited; see $LOG" >&2; exit 1; }
  C=$( (curl -s "127.0.0.1:$PORT/metrics" || true) | awk '/^livetally_events_consumed_total /{print $2}')
  [[ -n $C ]] && python3 -c "import sys; sys.exit(0 if float('$C') >= $N else 1)" && break
done
T1=$(date +%s.%N)
M=$(curl -s "127.0.0.1:$PORT/metrics" |
  awk '/^livetally_(rollups_published_total|changelog_bytes_total) /{printf "%s=%s ", $1, $2}')
read -r CPU FLT < <(awk '{print ($14 + $15) / 100, $10}' /proc/$PID/stat)
HWM=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
kill -TERM $PID
wait $PID || true
trap - EXIT
echo "$TAG wall_s=$(python3 -c "print(round($T1 - $T0, 2))") cpu_s=$CPU minflt=$FLT peak_rss_kb=$HWM $M"

#!/usr/bin/env bash
# End-to-end check of the Kafka Streams peer against a real broker
# (deploy/local/kafka.sh): generates N events over S streams, produces them to
# a 4-partition topic, runs the peer once per store kind with
# --expected-records N, checks that it stops by itself with its JSON line, and
# compares every stream's newest rollup with an independent Python count.
#
# usage: benches/peers/kafka-streams/scripts/smoke.sh [WORKDIR]
#   env: RECORDS (200000) STREAMS (50) STORES ("rocksdb memory") THREADS (1)
#        PEER_FLAGS (extra peer flags, e.g. --eos) KEEP_BROKER=1 (don't stop it)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER_DIR=$(cd "$HERE/.." && pwd)
REPO=$(cd "$PEER_DIR/../../.." && pwd)
K=$REPO/deploy/local/kafka.sh
WORK=${1:-$(mktemp -d /tmp/ks-peer-smoke.XXXXXX)}
RECORDS=${RECORDS:-200000}
STREAMS=${STREAMS:-50}
STORES=${STORES:-rocksdb memory}
THREADS=${THREADS:-1}
PEER_FLAGS=${PEER_FLAGS:-}
JAR=$PEER_DIR/target/livetally-kstreams-peer.jar
mkdir -p "$WORK"
BROKER_DIR=$WORK/broker

cleanup() {
  if [[ ${KEEP_BROKER:-0} != 1 ]]; then
    "$K" stop "$BROKER_DIR" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

[[ -f $JAR ]] || mvn -B -q -f "$PEER_DIR/pom.xml" package -DskipTests

echo "== data: $RECORDS records over $STREAMS streams in $WORK" >&2
python3 "$HERE/gen_events.py" --records "$RECORDS" --streams "$STREAMS" >"$WORK/events.tsv"
python3 "$HERE/expected.py" "$WORK/events.tsv" >"$WORK/expected.ndjson" 2>"$WORK/expected.summary"
cat "$WORK/expected.summary" >&2

B=$("$K" start "$BROKER_DIR")
echo "== broker $B" >&2
"$K" topic "$BROKER_DIR" events 4 >&2
t0=$(date +%s.%N)
"$K" tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$B" --topic events \
  --property parse.key=true --property key.separator=$'\t' \
  --producer-property linger.ms=20 --producer-property batch.size=262144 <"$WORK/events.tsv"
echo "== produced in $(python3 -c "import time,sys; print(round(time.time()-float(sys.argv[1]),1))" "$t0") s" >&2

fail=0
for store in $STORES; do
  out=rollups-$store
  app=ks-peer-$store-$$
  "$K" topic "$BROKER_DIR" "$out" 4 >&2
  echo "== peer: --store $store --threads $THREADS $PEER_FLAGS" >&2
  rc=0
  # shellcheck disable=SC2086
  java -jar "$JAR" --brokers "$B" --topic events --output "$out" --app-id "$app" \
    --threads "$THREADS" --store "$store" --expected-records "$RECORDS" \
    --exit-after-idle-ms 60000 --state-dir "$WORK/state" --cleanup-on-exit $PEER_FLAGS \
    >"$WORK/peer-$store.out" 2>"$WORK/peer-$store.err" || rc=$?
  grep '^kstreams-peer:' "$WORK/peer-$store.err" >&2 || true
  echo "   exit $rc, stdout: $(cat "$WORK/peer-$store.out")" >&2
  [[ $rc == 0 ]] || fail=1
  "$K" tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$B" --topic "$out" \
    --from-beginning --property print.key=true --property key.separator=$'\t' --timeout-ms 8000 \
    >"$WORK/rollups-$store.tsv" 2>/dev/null || true
  python3 "$HERE/compare.py" "$WORK/expected.ndjson" "$WORK/rollups-$store.tsv" >&2 || fail=1
done
if [[ $fail == 0 ]]; then
  echo "smoke: OK" >&2
else
  echo "smoke: FAILED (files in $WORK)" >&2
fi
exit $fail

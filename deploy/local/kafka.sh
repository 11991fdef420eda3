#!/usr/bin/env bash
# deploy/local/kafka.sh -- run a real single-node Apache Kafka 4.x broker
# (KRaft, combined broker+controller) on 127.0.0.1 for tests and benchmarks.
#
# The broker is Apache Kafka's own jars, resolved from Maven Central by
# deploy/local/pom.xml and run with the machine's `java`; nothing is
# downloaded from anywhere else, so this works on a clean checkout/CI machine
# that reaches only Maven Central. Run `kafka.sh help` for the commands.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

POM=$SCRIPT_DIR/pom.xml
BROKER_LOG4J=$SCRIPT_DIR/log4j2.properties
TOOLS_LOG4J=$SCRIPT_DIR/log4j2-tools.properties

KAFKA_HOME=${LIVETALLY_KAFKA_HOME:-$REPO_ROOT/target/kafka}
LIBS=$KAFKA_HOME/libs
# Stamp written only after a complete copy; holds the pom's hash so editing
# the pom (e.g. bumping kafka.version) triggers a re-fetch.
STAMP=$LIBS/.fetched

START_TIMEOUT=${LIVETALLY_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${LIVETALLY_KAFKA_STOP_TIMEOUT:-30}
HEAP_OPTS=${LIVETALLY_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
EXTRA_JVM_OPTS=${LIVETALLY_KAFKA_JVM_OPTS:-}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

# Main classes (Kafka 4.x; checked with `unzip -l` on the 4.1.1 jars).
BROKER_MAIN=kafka.Kafka                         # kafka_2.13 jar
STORAGE_MAIN=kafka.tools.StorageTool            # kafka_2.13 jar (kafka-storage.sh)
TOPIC_MAIN=org.apache.kafka.tools.TopicCommand  # kafka-tools jar (kafka-topics.sh)

usage() {
  cat <<EOF
Usage: deploy/local/kafka.sh COMMAND [ARGS]

Runs a single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1 from
Kafka's jars on Maven Central (see deploy/local/pom.xml), with the machine's java.

Commands:
  fetch                    Resolve the Kafka jars into \$LIBS (idempotent).
  start DIR                Start a broker whose state lives in DIR (created if
                           needed). A fresh DIR gets free ports, a new
                           cluster id and formatted storage; a DIR that already
                           holds a formatted broker is restarted on the SAME
                           ports with its data kept. Waits until the broker
                           answers (timeout ${START_TIMEOUT}s), then prints the
                           bootstrap address (127.0.0.1:PORT) as its last stdout
                           line. Starting a running broker just prints it again.
  stop DIR                 SIGTERM the broker of DIR, SIGKILL after ${STOP_TIMEOUT}s.
                           Keeps DIR's data. No-op if it is not running.
  status DIR               Print running/stopped; exit 0 if running, 3 if not.
  bootstrap DIR            Print the broker's bootstrap address.
  topic DIR NAME PARTITIONS [key=value ...]
                           Create topic NAME (replication factor 1) with the
                           given topic configs, e.g. cleanup.policy=compact.
                           No-op if the topic already exists.
  tool CLASS [ARGS ...]    Run any main class on the Kafka classpath, e.g.
                           org.apache.kafka.tools.ConsoleProducer --help.
  help                     This text.

Files in DIR: server.properties, data/ (log.dirs), broker.log, broker.pid,
bootstrap; with LIVETALLY_KAFKA_SASL_SSL also bootstrap-sasl-ssl,
sasl-ssl.toml, sasl-ssl.secret, broker.p12 and ca.pem (readable by the
owner only). Progress messages go to stderr; only results go to stdout.

Environment:
  LIVETALLY_KAFKA_HOME           jar cache root (default: <repo>/target/kafka);
                                 jars go to \$LIVETALLY_KAFKA_HOME/libs
  LIVETALLY_KAFKA_START_TIMEOUT  seconds to wait for readiness (default 90)
  LIVETALLY_KAFKA_STOP_TIMEOUT   seconds before SIGKILL on stop (default 30)
  LIVETALLY_KAFKA_HEAP_OPTS      broker heap (default "-Xms256m -Xmx768m")
  LIVETALLY_KAFKA_JVM_OPTS       extra broker JVM options
  LIVETALLY_KAFKA_SASL_SSL       set at a DIR's first start: a second listener
                                 with TLS and SCRAM-SHA-512; its address is in
                                 DIR/bootstrap-sasl-ssl, the client settings
                                 in DIR/sasl-ssl.toml (a --config file)
  JAVA_HOME                      java to use (default: java on PATH)
EOF
}

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"
}

# ---------------------------------------------------------------------------
# Jars
# ---------------------------------------------------------------------------

pom_hash() {
  sha256sum "$POM" | cut -d' ' -f1
}

libs_complete() {
  [[ -f $STAMP && "$(cat "$STAMP")" == "$(pom_hash)" ]]
}

cmd_fetch() {
  libs_complete && return 0
  need_cmd mvn "Maven is needed to fetch the Kafka jars from Maven Central"
  need_cmd flock "util-linux"
  mkdir -p "$KAFKA_HOME"
  # Several test processes may call `start` at once on a clean checkout:
  # serialise the download, then re-check, so only the first one fetches.
  exec 8>"$KAFKA_HOME/.fetch.lock"
  flock 8
  if libs_complete; then
    exec 8>&-
    return 0
  fi
  log "fetching Kafka jars into $LIBS (mvn, Maven Central)"
  # Copy into a scratch dir and swap it in whole: an interrupted fetch never
  # leaves a half-populated libs/ that looks usable.
  local tmp=$KAFKA_HOME/libs.tmp.$$
  rm -rf "$tmp"
  # (Debian's mvn 3.8.7 prints stray ESC[0m codes even with -B; strip them.)
  if ! mvn -B -q -f "$POM" \
      dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$tmp" 2>&1 | sed -u $'s/\e\\[0m//g' >&2; then
    rm -rf "$tmp"
    die "mvn could not resolve the Kafka jars (see output above)"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "no kafka_2.13 jar in $tmp"
  pom_hash >"$tmp/.fetched"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  exec 8>&-
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

# Runs a Kafka CLI class: small heap, quick-start JIT, warnings on stderr only.
run_tool() {
  local main=$1; shift
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    -cp "$LIBS/*" "$main" "$@"
}

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

# Absolute path (created): the broker must never see relative paths.
abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# Value of KEY in a java properties file we wrote ourselves (simple key=value).
read_prop() {
  local file=$1 key=$2
  sed -n "s/^${key//./\\.}=//p" "$file" | tail -n1
}

# N distinct free TCP ports on 127.0.0.1. All sockets are held open until all
# are chosen, so the ports differ; there is still a small window before the
# broker binds them, which start_fresh covers by retrying on "Address already
# in use".
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# A Kafka cluster id: 16 random bytes, url-safe base64 without padding, like
# org.apache.kafka.common.Uuid.randomUuid() (which also rejects a leading '-').
new_cluster_id() {
  python3 - <<'PY'
import base64, uuid
while True:
    u = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not u.startswith("-"):
        print(u)
        break
PY
}

# Exit 0 iff a broker answers a Metadata request on 127.0.0.1:PORT and lists
# at least one live broker. A live (unfenced) broker in the reply means the
# controller has registered it, so topic creation, consumer groups and
# transactions can be used right away. A bare TCP connect is not enough: the
# listener socket is bound before the broker has caught up with the metadata
# log. Metadata v4 is used because Kafka 4 removed v0-v3 (KIP-896).
probe_ready() {
  python3 - "$1" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
client = b"livetally-probe"
# header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id
# body v4: topics=null (-1), allow_auto_topic_creation=false
body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", -1, 0)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.settimeout(5)
        s.sendall(struct.pack(">i", len(body)) + body)
        def read(n):
            buf = b""
            while len(buf) < n:
                chunk = s.recv(n - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            return buf
        size = struct.unpack(">i", read(4))[0]
        resp = read(size)
except (OSError, EOFError):
    sys.exit(1)
# response: correlation_id, throttle_time_ms, brokers array length
corr, _throttle, nbrokers = struct.unpack(">iii", resp[:12])
sys.exit(0 if corr == 7 and nbrokers > 0 else 1)
PY
}

# ---------------------------------------------------------------------------
# Broker process
# ---------------------------------------------------------------------------

# Is PID a live broker started for DIR? Checked via its command line (the
# DIR/server.properties argument), so a recycled pid or another broker is
# never mistaken for ours. Zombies have an empty cmdline and count as dead.
is_our_broker() {
  local pid=$1 dir=$2 arg main=0 conf=0
  local -a argv=()
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # Pure bash (no forks): this runs for every process when scanning /proc.
  { mapfile -d '' argv <"/proc/$pid/cmdline"; } 2>/dev/null || return 1
  for arg in "${argv[@]}"; do
    [[ $arg == "$BROKER_MAIN" ]] && main=1
    [[ $arg == "$dir/server.properties" ]] && conf=1
  done
  ((main && conf))
}

# Prints the pid of DIR's running broker, or fails. Falls back to scanning
# /proc in case broker.pid was lost (e.g. `start` was killed right after the
# launch).
broker_pid() {
  local dir=$1 pid p
  if [[ -f $dir/broker.pid ]]; then
    pid=$(cat "$dir/broker.pid")
    if is_our_broker "$pid" "$dir"; then
      echo "$pid"
      return 0
    fi
  fi
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    if is_our_broker "$pid" "$dir"; then
      echo "$pid" >"$dir/broker.pid"
      echo "$pid"
      return 0
    fi
  done
  return 1
}

write_server_properties() {
  local dir=$1 port=$2 cport=$3 sport=${4:-}
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$port"
  local map="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ -n $sport ]]; then
    listeners+=",SASL_SSL://127.0.0.1:$sport"
    advertised+=",SASL_SSL://127.0.0.1:$sport"
    map+=",SASL_SSL:SASL_SSL"
  fi
  cat >"$dir/server.properties" <<EOF
# Written by deploy/local/kafka.sh: single-node KRaft broker+controller for
# local tests. The ports are fixed once chosen: the controller endpoint is
# recorded in the formatted metadata (standalone dynamic quorum), and tests
# that bounce the broker expect the same bootstrap address afterwards.
node.id=1
process.roles=broker,controller
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$map
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$dir/data

# One broker: every internal topic must make do with a single replica, or
# consumer groups (__consumer_offsets), transactions (__transaction_state)
# and share groups would never become available.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer partitions than the default 50 for the internal topics: they are
# created on first use, and 50 segments each slow the first group join /
# first transaction on a 2-core machine for no benefit here.
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5

# Tests want a consumer group to get its assignment at once, topics only
# when they create them, and one partition unless they ask for more.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.partitions=1

# Compaction tests (cleanup.policy=compact topics with a small segment.ms)
# should not wait for the default 15 s between log cleaner passes.
log.cleaner.backoff.ms=1000
EOF
  if [[ -n $sport ]]; then
    write_sasl_ssl "$dir" "$sport"
  fi
}

# With LIVETALLY_KAFKA_SASL_SSL set at the first start: a second listener,
# SASL_SSL on 127.0.0.1:$2, as a managed cluster has. TLS with a self-signed
# certificate for 127.0.0.1 (DIR/ca.pem), and SCRAM-SHA-512 for the user
# `livetally` (added when the storage is formatted). DIR/sasl-ssl.toml holds
# the client settings, as a `--config` file's `[kafka]` table;
# DIR/bootstrap-sasl-ssl the listener's address.
write_sasl_ssl() {
  local dir=$1 sport=$2 keytool=${JAVA_HOME:+$JAVA_HOME/bin/}keytool
  need_cmd "$keytool" "the JDK's keytool makes the broker's TLS certificate"
  # The password is in these files (and server.properties): the owner's only.
  umask 077
  chmod 600 "$dir/server.properties"
  local secret
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  echo "$secret" >"$dir/sasl-ssl.secret"
  rm -f "$dir/broker.p12" "$dir/ca.pem"
  "$keytool" -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
    -dname CN=127.0.0.1 -ext SAN=ip:127.0.0.1,dns:localhost \
    -keystore "$dir/broker.p12" -storetype PKCS12 -storepass "$secret" -keypass "$secret" \
    >/dev/null 2>&1 || die "keytool could not make the broker's certificate"
  "$keytool" -exportcert -rfc -alias broker -keystore "$dir/broker.p12" \
    -storetype PKCS12 -storepass "$secret" -file "$dir/ca.pem" >/dev/null 2>&1 ||
    die "keytool could not export the broker's certificate"
  cat >>"$dir/server.properties" <<EOF

# LIVETALLY_KAFKA_SASL_SSL: TLS and SCRAM-SHA-512 on the SASL_SSL listener.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.location=$dir/broker.p12
ssl.keystore.type=PKCS12
ssl.keystore.password=$secret
ssl.key.password=$secret
EOF
  cat >"$dir/sasl-ssl.toml" <<EOF
[kafka]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "livetally"
"sasl.password" = "$secret"
"ssl.ca.location" = "$dir/ca.pem"
EOF
  echo "127.0.0.1:$sport" >"$dir/bootstrap-sasl-ssl"
}

# Starts java for DIR in the background and records its pid. Returns at once.
launch_broker() {
  local dir=$1
  # python3 wrapper: setsid() so the broker outlives the caller's session /
  # process group (Ctrl-C of a test run, make's job control), and close every
  # inherited fd >= 3 so the broker never holds a caller's pipe or lock open
  # (e.g. `B=$(kafka.sh start d)` would otherwise never see EOF). exec keeps
  # the pid, so $! is the java pid.
  # shellcheck disable=SC2086  # HEAP_OPTS / EXTRA_JVM_OPTS are word lists
  python3 -c '
import os, sys
try:
    os.setsid()
except OSError:
    pass
os.closerange(3, 65536)
os.execvp(sys.argv[1], sys.argv[1:])
' "$JAVA" -server $HEAP_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$BROKER_LOG4J" -Dkafka.logs.dir="$dir" \
    $EXTRA_JVM_OPTS \
    -cp "$LIBS/*" "$BROKER_MAIN" "$dir/server.properties" \
    </dev/null >>"$dir/broker.log" 2>&1 &
  echo $! >"$dir/broker.pid"
}

# Waits for DIR's broker (pid PID) to answer on PORT.
# Returns 0 when ready, 1 if the process died, 2 on timeout.
wait_ready() {
  local dir=$1 pid=$2 port=$3
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    # kill -0, not is_our_broker: for a moment after launch the pid still runs
    # the python3 wrapper, not java. It is our own child, so bash reaps it
    # (no zombie) and the pid cannot be reused while we wait.
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    if probe_ready "$port"; then
      return 0
    fi
    sleep 0.5
  done
  return 2
}

# Sends SIGTERM, waits up to STOP_TIMEOUT, then SIGKILL. Only ever signals a
# pid that is_our_broker() confirms belongs to DIR.
kill_broker() {
  local dir=$1 pid=$2
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while is_our_broker "$pid" "$dir"; do
    if ((SECONDS >= deadline)); then
      log "broker pid $pid did not exit after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local tries=50
      while ((tries-- > 0)) && is_our_broker "$pid" "$dir"; do
        sleep 0.1
      done
      break
    fi
    sleep 0.2
  done
  rm -f "$dir/broker.pid"
}

# Lock DIR so concurrent start/stop calls on the same DIR do not interleave.
# (launch_broker closes fd 9 in the broker, so the lock dies with this script.)
lock_dir() {
  exec 9>"$1/.kafka.sh.lock"
  flock 9
}

# Launches, waits, and on failure reports the log tail. Returns wait_ready's
# code; the broker.log byte offset of this attempt is in LAUNCH_LOG_OFFSET.
launch_and_wait() {
  local dir=$1 port=$2 rc=0
  LAUNCH_LOG_OFFSET=$(stat -c %s "$dir/broker.log" 2>/dev/null || echo 0)
  launch_broker "$dir"
  local pid
  pid=$(cat "$dir/broker.pid")
  wait_ready "$dir" "$pid" "$port" || rc=$?
  if ((rc == 2)); then
    log "broker did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s; stopping it"
    kill_broker "$dir" "$pid"
  fi
  return $rc
}

this_attempt_log() {
  tail -c +"$((LAUNCH_LOG_OFFSET + 1))" "$1/broker.log"
}

# Reports a failed start: the first errors (the cause; the end of the log is
# usually just shutdown noise) and the last lines, then exits.
fail_start() {
  local dir=$1
  log "broker failed to start; first errors in $dir/broker.log:"
  this_attempt_log "$dir" | grep -E -A3 '^\[[^]]*\] (ERROR|FATAL) |^Error|Exception' |
    head -n 20 | sed 's/^/    /' >&2 || true
  log "last lines of $dir/broker.log:"
  this_attempt_log "$dir" | tail -n 10 | sed 's/^/    /' >&2
  if this_attempt_log "$dir" | grep -q 'Address already in use'; then
    log "a port of this broker is taken by another process (see $dir/server.properties);" \
      "a formatted DIR always restarts on its original ports"
  fi
  exit 1
}

# First start of DIR: pick ports, write config, format, launch. Retries with
# new ports if another process grabbed one in between (rare but possible).
start_fresh() {
  local dir=$1 attempt port cport sport cluster_id rc
  for attempt in 1 2 3; do
    rm -rf "$dir/data"
    read -r port cport sport <<<"$(free_ports 3)"
    local scram=()
    if [[ -n ${LIVETALLY_KAFKA_SASL_SSL:-} ]]; then
      write_server_properties "$dir" "$port" "$cport" "$sport"
      scram=(--add-scram "SCRAM-SHA-512=[name=livetally,password=$(cat "$dir/sasl-ssl.secret")]")
    else
      write_server_properties "$dir" "$port" "$cport"
    fi
    cluster_id=$(new_cluster_id)
    # --standalone: a single-voter dynamic KRaft quorum (KIP-853), the 4.x
    # way; it needs controller.quorum.bootstrap.servers, not .voters.
    if ! run_tool "$STORAGE_MAIN" format --standalone \
        --cluster-id "$cluster_id" --config "$dir/server.properties" "${scram[@]}" \
        >"$dir/format.log" 2>&1; then
      sed 's/^/    /' "$dir/format.log" >&2
      die "formatting storage in $dir/data failed"
    fi
    log "formatted $dir/data (cluster id $cluster_id); starting broker on 127.0.0.1:$port (controller $cport)"
    echo "127.0.0.1:$port" >"$dir/bootstrap"
    rc=0
    launch_and_wait "$dir" "$port" || rc=$?
    ((rc == 0)) && return 0
    if ((rc == 1 && attempt < 3)) && this_attempt_log "$dir" | grep -q 'Address already in use'; then
      log "port taken before the broker could bind it; retrying with new ports"
      continue
    fi
    fail_start "$dir"
  done
}

# Restart of a formatted DIR: same server.properties, same ports, same data.
start_existing() {
  local dir=$1 port rc=0
  [[ -f $dir/server.properties ]] || die "$dir/data is formatted but $dir/server.properties is missing"
  port=$(read_prop "$dir/server.properties" advertised.listeners | tr ',' '\n' |
    sed -n 's|^PLAINTEXT://.*:||p')
  [[ $port =~ ^[0-9]+$ ]] || die "cannot read the broker port from $dir/server.properties"
  echo "127.0.0.1:$port" >"$dir/bootstrap"
  log "restarting broker in $dir on 127.0.0.1:$port (data kept)"
  if [[ -n ${LIVETALLY_KAFKA_SASL_SSL:-} && ! -f $dir/sasl-ssl.toml ]]; then
    log "warning: LIVETALLY_KAFKA_SASL_SSL is read at a DIR's first start only; $dir has no SASL_SSL listener"
  fi
  launch_and_wait "$dir" "$port" || rc=$?
  ((rc == 0)) || fail_start "$dir"
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

cmd_start() {
  local dir pid t0=$SECONDS
  dir=$(abs_dir "$1")
  need_cmd "$JAVA" "Java 17+ runs the broker"
  need_cmd python3 "used to pick free ports and probe the broker"
  need_cmd flock "util-linux"
  cmd_fetch
  lock_dir "$dir"
  if pid=$(broker_pid "$dir"); then
    log "broker in $dir already running (pid $pid)"
  else
    if [[ -f $dir/data/meta.properties ]]; then
      start_existing "$dir"
    else
      start_fresh "$dir"
    fi
    log "broker ready in $((SECONDS - t0))s (pid $(cat "$dir/broker.pid"), log $dir/broker.log)"
  fi
  cat "$dir/bootstrap"
}

cmd_stop() {
  local dir=$1 pid
  if [[ ! -d $dir ]]; then
    log "$dir does not exist; nothing to stop"
    return 0
  fi
  dir=$(abs_dir "$dir")
  lock_dir "$dir"
  if ! pid=$(broker_pid "$dir"); then
    rm -f "$dir/broker.pid"
    log "broker in $dir is not running"
    return 0
  fi
  log "stopping broker in $dir (pid $pid)"
  kill_broker "$dir" "$pid"
  log "stopped"
}

cmd_status() {
  local dir=$1 pid
  if [[ -d $dir ]]; then
    dir=$(abs_dir "$dir")
    if pid=$(broker_pid "$dir"); then
      echo "running pid=$pid bootstrap=$(cat "$dir/bootstrap" 2>/dev/null) dir=$dir"
      return 0
    fi
    if [[ -f $dir/data/meta.properties ]]; then
      echo "stopped (formatted data in $dir/data; 'start' restarts it on $(cat "$dir/bootstrap" 2>/dev/null))"
      return 3
    fi
  fi
  echo "stopped (no broker in $dir)"
  return 3
}

# The bootstrap address of DIR's running broker (fails if it is not running).
running_bootstrap() {
  local dir
  [[ -d $1 ]] || die "no broker in $1"
  dir=$(abs_dir "$1")
  broker_pid "$dir" >/dev/null || die "broker in $dir is not running (use: kafka.sh start $1)"
  cat "$dir/bootstrap"
}

cmd_topic() {
  local dir=$1 name=$2 partitions=$3 bootstrap kv
  shift 3
  [[ $partitions =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer, got '$partitions'"
  bootstrap=$(running_bootstrap "$dir")
  local args=(--bootstrap-server "$bootstrap" --create --if-not-exists
    --topic "$name" --partitions "$partitions" --replication-factor 1)
  for kv in "$@"; do
    [[ $kv == *=* ]] || die "topic config must be key=value, got '$kv'"
    args+=(--config "$kv")
  done
  cmd_fetch
  run_tool "$TOPIC_MAIN" "${args[@]}"
}

main() {
  local cmd=${1:-help}
  (($# > 0)) && shift
  case $cmd in
    fetch)
      (($# == 0)) || { usage >&2; exit 2; }
      cmd_fetch
      ;;
    start | stop | status | bootstrap)
      (($# == 1)) || { usage >&2; exit 2; }
      case $cmd in
        start) cmd_start "$1" ;;
        stop) cmd_stop "$1" ;;
        status) cmd_status "$1" ;;
        bootstrap) running_bootstrap "$1" ;;
      esac
      ;;
    topic)
      (($# >= 3)) || { usage >&2; exit 2; }
      cmd_topic "$@"
      ;;
    tool)
      (($# >= 1)) || { usage >&2; exit 2; }
      cmd_fetch
      run_tool "$@"
      ;;
    help | -h | --help)
      usage
      ;;
    *)
      log "unknown command '$cmd'"
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"

#!/usr/bin/env python3
"""make bench-e2e: livetally end to end against a real Kafka broker.

Starts a dedicated single-node broker (deploy/local/kafka.sh), preloads N
seeded events over 12 partitions with `livetally gen`, then measures, one
after the other and each with a fresh consumer group and fresh output topics:

  1. bare_consume       an rdkafka BaseConsumer that reads every record and
                        does nothing else (the machine's and broker's limit;
                        fetch.queue.backoff.ms=10, and once more with
                        librdkafka's defaults for the record)
  2. livetally ALO      `livetally run --guarantee at-least-once`
  3. livetally EO       `livetally run --guarantee exactly-once --publish-interval-ms 100`
  4. Kafka Streams      the peer in benches/peers/kafka-streams

and then a latency run per guarantee: `livetally gen --rate 50000` with event
times on the wall clock, `/v1/live` (SSE) read in a thread, and for each
cumulative rollup that carries a newer newest event of its stream,
arrival − last_event_ts.

Python 3 standard library only. See docs/BENCHMARKS.md ("End to end") for
what each figure includes. The broker is always stopped at the end, also on
errors and on Ctrl-C / SIGTERM.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy/local/kafka.sh"
LIVETALLY = REPO / "target/release/livetally"
BARE = REPO / "target/release/examples/bare_consume"
SSE_LATENCY = REPO / "target/release/examples/sse_latency"
PEER_POM = REPO / "benches/peers/kafka-streams/pom.xml"
PEER_JAR = REPO / "benches/peers/kafka-streams/target/livetally-kstreams-peer.jar"
BROKER_DIR = REPO / "target/bench-broker"
OUT_ROOT = REPO / "target/bench-e2e"

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: unwind through every `finally`."""


def log(msg):
    print(f"bench-e2e: {msg}", file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().strip()


# ---------------------------------------------------------------------------
# /proc sampling
# ---------------------------------------------------------------------------


def proc_cpu_seconds(pid, include_reaped_children=True):
    """utime+stime of pid (and of its reaped children), seconds; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = int(rest[11]) + int(rest[12])
    if include_reaped_children:
        ticks += int(rest[13]) + int(rest[14])
    return ticks / CLK_TCK


def proc_children(pid):
    """Live child pids (via /proc/PID/task/*/children)."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest (already in user)
    return total - idle, total


class Sampler(threading.Thread):
    """Samples CPU (process + descendants) and VmHWM/VmRSS of a process
    every `interval` seconds until it exits; keeps the last values read."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.cpu = 0.0
        self.hwm_kb = 0
        self.rss_kb = 0
        self.child_cpu = {}
        self._halt = threading.Event()

    def sample(self):
        cpu = proc_cpu_seconds(self.pid)
        if cpu is None:
            return False
        hwm = proc_status_kb(self.pid, "VmHWM")
        rss = proc_status_kb(self.pid, "VmRSS")
        # Living descendants (reaped ones are in cutime/cstime already).
        stack = proc_children(self.pid)
        while stack:
            kid = stack.pop()
            c = proc_cpu_seconds(kid, include_reaped_children=False)
            if c is not None:
                self.child_cpu[kid] = c
                stack.extend(proc_children(kid))
        self.cpu = cpu + sum(self.child_cpu.values())
        if hwm is not None:
            self.hwm_kb = max(self.hwm_kb, hwm)
        if rss is not None:
            self.rss_kb = rss
        return True

    def run(self):
        while not self._halt.is_set():
            if not self.sample():
                break
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()


class Child:
    """A benchmarked process: Popen + sampler + exact rusage at exit."""

    def __init__(self, name, cmd, logdir, stdout=False, env=None):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log_path = logdir / f"{name}.log"
        self.log_file = open(self.log_path, "wb")
        self.stdout_lines = []
        self.stdout_times = []
        self.stderr_lines = []
        self.line_event = threading.Condition()
        log(f"{name}: {' '.join(self.cmd)}")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            start_new_session=True,  # our Ctrl-C handling stops it, in order
        )
        CHILDREN.append(self)
        self.sampler = Sampler(self.p.pid)
        self.sampler.start()
        self.rusage = None
        self.exit_time = None
        self.killed = False
        self._readers = [
            threading.Thread(target=self._read, args=(self.p.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.p.stderr, False), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, is_stdout):
        for raw in iter(stream.readline, b""):
            t = time.monotonic()
            self.log_file.write((b"OUT " if is_stdout else b"ERR ") + raw)
            self.log_file.flush()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.line_event:
                if is_stdout:
                    self.stdout_lines.append(line)
                    self.stdout_times.append(t)
                else:
                    self.stderr_lines.append(line)
                self.line_event.notify_all()

    def wait_line(self, pattern, timeout, stdout=False):
        """First line matching regex `pattern` (a match object), or None."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self.line_event:
            while True:
                lines = self.stdout_lines if stdout else self.stderr_lines
                for line in lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(lines)
                if self.p.poll() is not None or time.monotonic() > deadline:
                    # One last look after exit.
                    for line in (self.stdout_lines if stdout else self.stderr_lines)[seen:]:
                        m = rx.search(line)
                        if m:
                            return m
                    return None
                self.line_event.wait(0.1)

    def poll(self):
        """Reaps the process if it exited (keeping its rusage); returns the
        exit code or None."""
        if self.p.returncode is not None:
            return self.p.returncode
        try:
            pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
        except ChildProcessError:
            return self.p.poll()
        if pid == 0:
            return None
        self.exit_time = time.monotonic()
        self.rusage = ru
        self.p.returncode = os.waitstatus_to_exitcode(status)
        return self.p.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        self.sampler.stop()
        self.sampler.join(1)
        for t in self._readers:
            t.join(2)
        return self.p.returncode

    def terminate(self, timeout=30):
        if self.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                log(f"{self.name}: no exit {timeout}s after SIGTERM; SIGKILL")
                self.killed = True
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.wait(10)
        else:
            self.wait(5)
        return self.p.returncode

    def usage(self):
        """CPU seconds and peak RSS: /proc sampling (as reported) and the
        exact rusage from wait4 (cross-check)."""
        out = {
            "cpu_seconds_sampled": round(self.sampler.cpu, 3),
            "peak_rss_mb_sampled": round(self.sampler.hwm_kb / 1024, 1),
        }
        if self.killed:
            out["killed_after_sigterm_timeout"] = True
        if self.rusage is not None:
            out["cpu_seconds_rusage"] = round(self.rusage.ru_utime + self.rusage.ru_stime, 3)
            out["peak_rss_mb_rusage"] = round(self.rusage.ru_maxrss / 1024, 1)
        return out

    def close(self):
        try:
            self.log_file.close()
        except OSError:
            pass


CHILDREN = []


# ---------------------------------------------------------------------------
# Broker and topics
# ---------------------------------------------------------------------------


def kafka(*args, capture=True, timeout=180):
    cmd = [str(KAFKA_SH)] + [str(a) for a in args]
    r = subprocess.run(
        cmd, cwd=REPO, stdout=subprocess.PIPE if capture else None, timeout=timeout, check=True
    )
    return r.stdout.decode().strip() if capture else ""


def create_topic(name, partitions, *configs):
    kafka("topic", BROKER_DIR, name, partitions, *configs)


def broker_pid():
    try:
        return int((BROKER_DIR / "broker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


class Phase:
    """CPU of the broker and of the whole machine over one measured phase."""

    def __init__(self):
        self.bpid = broker_pid()
        self.b0 = proc_cpu_seconds(self.bpid) if self.bpid else None
        self.m0 = machine_cpu()
        self.t0 = time.monotonic()
        self.load0 = loadavg()

    def end(self):
        b1 = proc_cpu_seconds(self.bpid) if self.bpid else None
        m1 = machine_cpu()
        wall = time.monotonic() - self.t0
        busy = (m1[0] - self.m0[0]) / CLK_TCK
        return {
            "broker_cpu_seconds": None if b1 is None or self.b0 is None else round(b1 - self.b0, 2),
            "machine_busy_cpu_seconds": round(busy, 2),
            "machine_busy_cores": round(busy / wall, 2) if wall > 0 else None,
            "phase_wall_seconds": round(wall, 2),
            "loadavg_before": self.load0,
            "loadavg_after": loadavg(),
        }


# ---------------------------------------------------------------------------
# livetally HTTP helpers
# ---------------------------------------------------------------------------


def http_get(addr, path, timeout=5):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def metrics(addr):
    """{name{labels}: value} from /metrics."""
    status, body = http_get(addr, "/metrics")
    if status != 200:
        return {}
    out = {}
    for m in METRIC_LINE.finditer(body.decode("utf-8", "replace")):
        try:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        except ValueError:
            pass
    return out


def metric_sum(ms, name):
    """Sum over every label set of `name`."""
    total = 0.0
    found = False
    for k, v in ms.items():
        if k == name or k.startswith(name + "{"):
            total += v
            found = True
    return total if found else None


# The engine's counters each run reports, read from /metrics at its end.
COUNTERS = (
    "livetally_events_consumed_total",
    "livetally_events_invalid_total",
    "livetally_events_duplicate_total",
    "livetally_events_late_total",
    "livetally_rollups_published_total",
    "livetally_changelog_bytes_total",
    "livetally_dead_letters_total",
    "livetally_transactions_total",
    "livetally_publish_failures_total",
    "livetally_commit_failures_total",
)


def counters(ms):
    return {k: metric_sum(ms, k) for k in COUNTERS}


def histogram_quantiles(ms, name, qs=(0.5, 0.99)):
    """Bucket upper bounds holding the given quantiles of a Prometheus histogram."""
    buckets = []
    for k, v in ms.items():
        if k.startswith(name + "_bucket{"):
            m = re.search(r'le="([^"]+)"', k)
            if m:
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                buckets.append((le, v))
    if not buckets:
        return None
    buckets.sort()
    total = buckets[-1][1]
    if total <= 0:
        return None
    out = {"count": int(total)}
    for q in qs:
        for le, v in buckets:
            if v >= q * total:
                out[f"p{int(q * 100)}_le_seconds"] = le
                break
    return out


def start_livetally(name, brokers, topic, tag, guarantee, interval_ms, logdir, live_ms=None):
    cmd = [
        LIVETALLY, "run",
        "--brokers", brokers,
        "--topic", topic,
        "--group", f"lt-{tag}",
        "--rollup-topic", f"lt-{tag}.rollups",
        "--dlq-topic", f"lt-{tag}.dlq",
        "--changelog-topic", f"lt-{tag}.changelog",
        "--http", "127.0.0.1:0",
        "--guarantee", guarantee,
    ]
    if interval_ms is not None:
        cmd += ["--publish-interval-ms", str(interval_ms)]
    if live_ms is not None:
        cmd += ["--live-interval-ms", str(live_ms)]
    env = dict(os.environ)
    env.setdefault("LIVETALLY_LOG", "info,rdkafka=warn")
    child = Child(name, cmd, logdir, env=env)
    m = child.wait_line(r"livetally: serving http://([^/\s]+)/", timeout=120)
    if not m:
        child.terminate()
        raise RuntimeError(f"{name}: no 'serving http://' line (see {child.log_path})")
    return child, m.group(1)


# ---------------------------------------------------------------------------
# Throughput phases
# ---------------------------------------------------------------------------


def finish(result, child, n, done_at):
    """Common figures of a throughput phase."""
    wall = done_at - child.t0
    result["seconds"] = round(wall, 3)
    result["events_per_second"] = round(n / wall, 1) if wall > 0 else None
    result.update(child.usage())
    result["exit_code"] = child.p.returncode
    result["log"] = str(child.log_path.relative_to(REPO))
    # The kernel's own utime+stime and peak RSS (VmHWM) at exit, from wait4;
    # the 50 ms /proc samples (kept beside them) miss at most the last period.
    result["cpu_seconds"] = result.get("cpu_seconds_rusage", result["cpu_seconds_sampled"])
    result["peak_rss_mb"] = result.get("peak_rss_mb_rusage", result["peak_rss_mb_sampled"])
    result["cpu_seconds_per_million"] = round(result["cpu_seconds"] / (n / 1e6), 2)
    return result


# The limit consumer's only departure from librdkafka's defaults: with one
# consumer queue for all 12 partitions, the default fetch.queue.backoff.ms
# (1 s) idles the fetcher whenever the queue holds queued.min.messages, which
# caps a do-nothing consumer below what livetally (one queue per partition)
# reaches. 10 ms keeps the fetcher busy; see docs/BENCHMARKS.md.
BARE_TUNING = ["fetch.queue.backoff.ms=10"]


def run_bare(brokers, topic, n, logdir, timeout, settings, name, key):
    phase = Phase()
    cmd = [BARE, "--brokers", brokers, "--topic", topic, "--expected", n,
           "--timeout-secs", int(timeout)]
    for kv in settings:
        cmd += ["--set", kv]
    child = Child(key, cmd, logdir)
    try:
        m = child.wait_line(r"^\{.*\"records\"", timeout=timeout, stdout=True)
        code = child.wait(60)
        if not m or code != 0:
            raise RuntimeError(f"bare_consume failed (exit {code}); see {child.log_path}")
        report = json.loads(m.string)
        done_at = child.stdout_times[child.stdout_lines.index(m.string)]
        result = {"name": name, "key": key, "self_report": report, "librdkafka_settings": settings}
        finish(result, child, n, done_at)
        result["measured_to"] = "its JSON line (N-th record read)"
        result.update(phase.end())
        return result
    finally:
        child.terminate()
        child.close()


def run_livetally(label, key, brokers, topic, n, guarantee, interval_ms, tag, logdir, timeout):
    phase = Phase()
    child, addr = start_livetally(key, brokers, topic, tag, guarantee, interval_ms, logdir)
    try:
        deadline = child.t0 + timeout
        consumed = 0.0
        last_change = None
        prev_sample = child.t0
        done_at = None
        first_seen = None
        slow_polls = 0  # /metrics answers slower than 1 s (or not within 5 s)
        slowest_poll = 0.0
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"{key}: exited early ({child.p.returncode}); see {child.log_path}")
            sent = time.monotonic()
            try:
                c = metric_sum(metrics(addr), "livetally_events_consumed_total") or 0.0
            except OSError:
                c = consumed
            # The counter was read somewhere between `sent` and `t`; when the
            # HTTP server answers late this counts against livetally.
            t = time.monotonic()
            slowest_poll = max(slowest_poll, t - sent)
            if t - sent > 1.0:
                slow_polls += 1
            if c > consumed:
                if first_seen is None and c > 0:
                    first_seen = t
                last_change = (prev_sample, t)
                consumed = c
            prev_sample = sent
            if consumed >= n:
                done_at = t
                break
            if t > deadline:
                raise RuntimeError(f"{key}: {consumed:.0f} of {n} after {timeout}s")
            time.sleep(0.1)
        # Peak memory and the last figures just before it is asked to stop.
        child.sampler.sample()
        final = metrics(addr)
        result = {"name": label, "key": key, "guarantee": guarantee,
                  "publish_interval_ms": interval_ms or 1000}
        result["metrics"] = counters(final)
        result["batch_processing"] = histogram_quantiles(final, "livetally_batch_processing_seconds")
        result["cpu_seconds_at_done"] = round(child.sampler.cpu, 3)
        result["peak_rss_mb_at_done"] = round(child.sampler.hwm_kb / 1024, 1)
        result["metrics_polls_slower_than_1s"] = slow_polls
        result["slowest_metrics_poll_seconds"] = round(slowest_poll, 3)
        result["first_counted_seconds"] = round(first_seen - child.t0, 3) if first_seen else None
        # The counter moves once per publication: the N-th event was published
        # between these two samples.
        result["last_batch_seen_between_seconds"] = [
            round(last_change[0] - child.t0, 3), round(last_change[1] - child.t0, 3)]
        child.terminate(60)
        finish(result, child, n, done_at)
        result["measured_to"] = "events_consumed_total >= N on /metrics (polled every 100 ms)"
        result.update(phase.end())
        return result
    finally:
        child.terminate()
        child.close()


def run_peer(brokers, topic, n, tag, logdir, timeout, threads, statedir):
    output = f"ks-{tag}.rollups"
    create_topic(output, PARTITIONS)
    # Run a private copy: a rebuild of the jar during the run must not pull
    # classes out from under the running JVM.
    jar = logdir / PEER_JAR.name
    if not jar.exists():
        shutil.copy2(PEER_JAR, jar)
    phase = Phase()
    cmd = ["java", "-jar", jar, "--brokers", brokers, "--topic", topic, "--output", output,
           "--app-id", f"ks-{tag}", "--expected-records", n, "--threads", threads,
           "--state-dir", statedir, "--cleanup-on-exit"]
    child = Child("kafka_streams", cmd, logdir)
    try:
        m = None
        deadline = time.monotonic() + timeout
        while m is None and time.monotonic() < deadline:
            m = child.wait_line(r"^\{.*\"records\"", timeout=2, stdout=True)
            # A dead main thread leaves Kafka Streams' threads running: fail fast.
            if m is None and any(l.startswith('Exception in thread "main"') for l in child.stderr_lines):
                raise RuntimeError(f"peer: main thread died; see {child.log_path}")
            if m is None and child.poll() is not None:
                break
        if not m:
            raise RuntimeError(f"peer: no result line (exit {child.p.returncode}); see {child.log_path}")
        done_at = child.stdout_times[child.stdout_lines.index(m.string)]
        code = child.wait(120)
        report = json.loads(m.string)
        if code != 0 or report.get("records", 0) < n:
            raise RuntimeError(f"peer failed (exit {code}, {report}); see {child.log_path}")
        result = {"name": f"Kafka Streams peer ({threads} stream thread{'s' if threads != 1 else ''})",
                  "key": "kstreams", "self_report": report, "threads": threads}
        finish(result, child, n, done_at)
        result["exit_seconds"] = round(child.exit_time - child.t0, 3) if child.exit_time else None
        result["measured_to"] = "its JSON line (after its final commit and close)"
        result.update(phase.end())
        return result
    finally:
        child.terminate()
        child.close()


# ---------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------

def pct(sorted_values, q):
    if not sorted_values:
        return None
    # Nearest rank.
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def parse_ts(raw):
    """An event's `ts` as in the payload: epoch ms digits or an RFC 3339 string."""
    if raw[:1] == b'"':
        try:
            dt = datetime.datetime.fromisoformat(raw[1:-1].decode().replace("Z", "+00:00"))
            return int(round(dt.timestamp() * 1000))
        except ValueError:
            return None
    return int(raw)


def send_times(brokers, topic, total, needed, dump_path):
    """Reads the whole latency topic back (ConsoleConsumer, with each record's
    CreateTime: the wall clock at which gen handed the record to librdkafka)
    and returns (CreateTime − ts statistics over every record, {(stream_id,
    ts): earliest CreateTime} for the (stream, ts) pairs in `needed`)."""
    with open(dump_path, "wb") as out:
        try:
            subprocess.run(
                [str(KAFKA_SH), "tool", "org.apache.kafka.tools.consumer.ConsoleConsumer",
                 "--bootstrap-server", brokers, "--topic", topic, "--from-beginning",
                 "--max-messages", str(total), "--timeout-ms", "20000",
                 "--property", "print.timestamp=true", "--property", "print.key=true"],
                cwd=REPO, stdout=out, stderr=subprocess.DEVNULL, timeout=600)
        except subprocess.TimeoutExpired:
            pass
    rx = re.compile(rb'^CreateTime:(\d+)\t([^\t]*)\t.*?"ts":(\d+|"[^"]*")[,}]')
    lags = []
    sent = {}
    records = 0
    with open(dump_path, "rb") as f:
        for line in f:
            records += 1
            m = rx.match(line)
            if not m:
                continue
            ts = parse_ts(m.group(3))
            if ts is None:
                continue
            created = int(m.group(1))
            lags.append(created - ts)
            key = (m.group(2), ts)
            if key in needed and (key not in sent or created < sent[key]):
                sent[key] = created
    try:
        os.unlink(dump_path)
    except OSError:
        pass
    lags.sort()
    stats = None
    if lags:
        stats = {"records_read": records, "with_ts": len(lags), "min_ms": lags[0],
                 "p50_ms": pct(lags, 0.5), "p99_ms": pct(lags, 0.99), "max_ms": lags[-1]}
    return stats, sent


def run_latency(brokers, key, guarantee, interval_ms, live_ms, rate, seconds, streams, tag, logdir,
                warmup):
    topic = f"lat-{tag}"
    create_topic(topic, PARTITIONS)
    phase = Phase()
    child, addr = start_livetally(f"latency_{key}", brokers, topic, f"lat-{tag}", guarantee,
                                  interval_ms, logdir, live_ms)
    reader = None
    gen = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _ = http_get(addr, "/readyz")
            except OSError:
                status = 0
            if status == 200:
                break
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"latency_{key}: never ready; see {child.log_path}")
            time.sleep(0.1)
        # The observer (crates/livetally/examples/sse_latency.rs) reads until
        # a few seconds after gen ends.
        samples_path = logdir / f"latency_{key}_sse.tsv"
        reader = Child(f"latency_{key}_sse", [
            SSE_LATENCY, addr, seconds + warmup + max(3, 3 * (interval_ms or 1000) / 1000),
            samples_path], logdir)
        if not reader.wait_line(r"^connected", 10):
            raise RuntimeError(f"SSE observer did not connect; see {reader.log_path}")
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        gen_started_ms = now_ms()
        gen = Child(f"latency_{key}_gen", [
            LIVETALLY, "gen", "--brokers", brokers, "--topic", topic, "--rate", rate,
            "--duration", f"{seconds + warmup}s", "--streams", streams, "--seed", 2, "--format", "json",
            "--duplicate-rate", "0.02", "--invalid-rate", "0.005"], logdir)
        if gen.wait(seconds + warmup + 120) is None:
            raise RuntimeError("gen did not finish")
        gen_report = None
        for line in gen.stderr_lines:
            if line.startswith("{") and "produced" in line:
                gen_report = json.loads(line)
        if gen.p.returncode != 0:
            raise RuntimeError(f"gen failed ({gen.p.returncode}); see {gen.log_path}")
        if reader.wait(max(3, 3 * (interval_ms or 1000) / 1000) + 30) is None:
            raise RuntimeError(f"SSE observer did not finish; see {reader.log_path}")
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        final = metrics(addr)
        child.sampler.sample()
        phase_figures = phase.end()
        child.terminate(60)
        if reader.p.returncode != 0 or not reader.stdout_lines:
            raise RuntimeError(f"SSE observer failed ({reader.p.returncode}); see {reader.log_path}")
        sse_counts = json.loads(reader.stdout_lines[-1])
        samples = []
        with open(samples_path) as f:
            next(f)
            for line in f:
                arrival, stream, ts = line.rstrip("\n").split("\t")
                if float(arrival) >= gen_started_ms + warmup * 1000:
                    samples.append((float(arrival), stream.encode(), int(ts)))
        raw = sorted(a - ts for (a, _, ts) in samples)
        produced = (gen_report or {}).get("produced", rate * seconds)
        lag_stats, sent = send_times(brokers, topic, produced, {(st, ts) for (_, st, ts) in samples},
                                     logdir / f"latency_{key}_topic.tsv")
        from_send = sorted(a - sent[(st, ts)] for (a, st, ts) in samples if (st, ts) in sent)
        # Every measured rollup, for looking at latency over time.
        with open(logdir / f"latency_{key}_samples.tsv", "w") as out:
            out.write("arrival_ms\tstream_id\tlast_event_ts\tcreate_time_ms\n")
            for (a, st, ts) in samples:
                out.write(f"{a}\t{st.decode(errors='replace') if isinstance(st, bytes) else st}\t{ts}\t{sent.get((st, ts), '')}\n")

        def stats(values):
            if not values:
                return {"count": 0}
            return {"count": len(values), "p50_ms": round(pct(values, 0.5), 1),
                    "p99_ms": round(pct(values, 0.99), 1), "max_ms": round(values[-1], 1)}

        result = {
            "name": f"latency {guarantee}, "
                    + (f"live every {live_ms} ms, " if live_ms else "")
                    + f"publish every {interval_ms} ms",
            "key": key, "guarantee": guarantee, "publish_interval_ms": interval_ms,
            "live_interval_ms": live_ms,
            "rate": rate, "seconds": seconds, "warmup_seconds": warmup, "gen": gen_report,
            "rollups_measured": len(raw),
            "p50_ms": round(pct(raw, 0.5), 1) if raw else None,
            "p99_ms": round(pct(raw, 0.99), 1) if raw else None,
            "max_ms": round(raw[-1], 1) if raw else None,
            "from_send": stats(from_send),
            "generator_lag": lag_stats,
            "sse": sse_counts,
            "harness_cpu_seconds": round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 2),
            "sse_observer_cpu_seconds": round(reader.sampler.cpu, 2),
            "engine_end_to_end_histogram": histogram_quantiles(final, "livetally_end_to_end_latency_seconds"),
            "livetally_cpu_seconds": round(child.sampler.cpu, 2),
            "livetally_peak_rss_mb": round(child.sampler.hwm_kb / 1024, 1),
            "consumed": metric_sum(final, "livetally_events_consumed_total"),
            "metrics": counters(final),
            "log": str(child.log_path.relative_to(REPO)),
        }
        result.update(phase_figures)
        return result
    finally:
        if reader is not None:
            reader.terminate()
            reader.close()
        if gen is not None:
            gen.terminate()
            gen.close()
        child.terminate()
        child.close()


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "—"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}{suffix}"
    return f"{v:,.{digits}f}{suffix}"


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def report(results):
    lines = []
    if results["config"].get("smoke"):
        lines.append("SMOKE RUN: tiny and start-up dominated; it keeps the harness working, "
                     "its figures say nothing about the targets.")
        lines.append("")
    phases = {r["key"]: r for r in results["throughput"] if "events_per_second" in r}
    bare = phases.get("bare", {}).get("events_per_second")
    ks = phases.get("kstreams", {}).get("events_per_second")
    alo = phases.get("alo", {}).get("events_per_second")
    eo = phases.get("eo", {}).get("events_per_second")
    n = results["config"]["events"]
    if not results["throughput"]:
        lines.append("(no catch-up phases run)")
    lines.append(f"Catch-up over {n:,} preloaded events, {results['config']['partitions']} partitions, "
                 f"{results['config']['streams']:,} streams (wall time from process start, start-up included):")
    lines.append("")
    lines.append("| consumer | seconds | events/s | CPU s per M events | peak RSS MB | broker CPU s | vs bare | vs Kafka Streams |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["throughput"]:
        if "events_per_second" not in r:
            lines.append(f"| {r['name']} | failed: {r.get('error', '?')} | | | | | | |")
            continue
        eps = r["events_per_second"]
        vb = ratio(eps, bare)
        vk = ratio(eps, ks)
        lines.append(
            f"| {r['name']} | {fmt(r['seconds'], 1)} | {fmt(eps)} | {fmt(r['cpu_seconds_per_million'], 1)} | "
            f"{fmt(r['peak_rss_mb'])} | {fmt(r.get('broker_cpu_seconds'), 1)} | "
            f"{fmt(vb, 2, '×')} | {fmt(vk, 2, '×')} |")
    lines.append("")
    lines.append("| ratio | value | target | met? |")
    lines.append("|---|---:|---|---|")
    targets = []

    def target(name, value, goal, ok):
        targets.append({"target": name, "value": value, "goal": goal, "met": ok})
        shown = "—" if value is None else (f"{value:.2f}×" if "×" in goal else f"{value:.1f} ms")
        lines.append(f"| {name} | {shown} | {goal} | {'—' if ok is None else ('yes' if ok else '**no**')} |")

    r = ratio(alo, bare)
    target("livetally ALO / bare consume", r, "≥ 0.60×", None if r is None else r >= 0.60)
    r = ratio(alo, ks)
    target("livetally ALO / Kafka Streams", r, "≥ 5.00×", None if r is None else r >= 5.0)
    r = ratio(eo, alo)
    target("livetally EO / ALO", r, "≥ 0.50×", None if r is None else r >= 0.50)
    lat = {x["key"]: x for x in results["latency"] if "p99_ms" in x}
    for k, goal, limit, label in (("alo", "≤ 50 ms", 50, "ALO, 50k ev/s"),
                                  ("eo", "≤ 300 ms", 300, "EO, 100 ms interval")):
        p = lat.get(k, {}).get("p99_ms")
        target(f"p99 event ts → /v1/live, {label}", p, goal, None if p is None else p <= limit)
        p = (lat.get(k, {}).get("from_send") or {}).get("p99_ms")
        target(f"p99 gen send → /v1/live, {label}", p, goal, None if p is None else p <= limit)
    results["targets"] = targets
    lines.append("")
    if results["latency"]:
        lines.append("Latency to a cumulative rollup read from `/v1/live`, for rollups carrying a newer newest "
                     f"event of their stream, after a {results['latency'][0].get('warmup_seconds', 3):.0f} s warm-up. "
                     "'from ts' = arrival − last_event_ts; 'from send' = arrival − CreateTime of that newest "
                     "event (when gen handed it to librdkafka):")
        lines.append("")
        lines.append("| run | gen events/s | rollups | from ts p50 / p99 / max ms | from send p50 / p99 / max ms "
                     "| gen lag (CreateTime − ts) p50 / p99 ms | SSE rollups skipped by server | engine histogram p50 / p99 ≤ s |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for x in results["latency"]:
            if "p99_ms" not in x:
                lines.append(f"| {x['name']} | failed: {x.get('error', '?')} | | | | | | |")
                continue
            g = x.get("generator_lag") or {}
            fs = x.get("from_send") or {}
            h = x.get("engine_end_to_end_histogram") or {}
            rate = (x.get("gen") or {}).get("records_per_second")
            lines.append(
                f"| {x['name']} | {fmt(rate)} | {fmt(x['rollups_measured'])} | "
                f"{fmt(x['p50_ms'], 1)} / {fmt(x['p99_ms'], 1)} / {fmt(x['max_ms'], 1)} | "
                f"{fmt(fs.get('p50_ms'), 1)} / {fmt(fs.get('p99_ms'), 1)} / {fmt(fs.get('max_ms'), 1)} | "
                f"{fmt(g.get('p50_ms'))} / {fmt(g.get('p99_ms'))} | {fmt(x['sse'].get('skipped_by_server'))} | "
                f"{h.get('p50_le_seconds', '—')} / {h.get('p99_le_seconds', '—')} |")
    lines.append("")
    lines.append(f"load average before: {results['loadavg_before']}; after: {results.get('loadavg_after')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

PARTITIONS = 12


def build(skip_peer, outdir):
    log("building livetally (release, bins + examples)")
    subprocess.run(["cargo", "build", "--release", "-p", "livetally", "--bins", "--examples"],
                   cwd=REPO, check=True)
    if not skip_peer:
        log("building the Kafka Streams peer")
        r = subprocess.run(["mvn", "-B", "-q", "-f", str(PEER_POM), "package", "-DskipTests"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # (Debian's mvn prints stray ESC[0m codes even with -B.)
        sys.stderr.write(r.stdout.decode("utf-8", "replace").replace("\x1b[0m", ""))
        if r.returncode != 0:
            raise RuntimeError(f"mvn package failed ({r.returncode})")
        if not PEER_JAR.exists():
            raise RuntimeError(f"{PEER_JAR} missing after mvn package")
        shutil.copy2(PEER_JAR, outdir / PEER_JAR.name)


def main():
    global PARTITIONS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--skip-peer", action="store_true", help="no Kafka Streams build or run")
    ap.add_argument("--skip-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--latency-seconds", type=int, default=30,
                    help="seconds measured in each latency run, after the warm-up")
    ap.add_argument("--latency-warmup", type=int, default=15,
                    help="seconds of traffic before measuring: the broker is started fresh, "
                         "and its JIT compilation takes a third of a core for the first half minute")
    ap.add_argument("--latency-rate", type=int, default=50_000)
    ap.add_argument("--peer-threads", type=int, default=os.cpu_count() or 1,
                    help="num.stream.threads of the peer (default: the number of cores)")
    ap.add_argument("--only", default="bare,bare_default,alo,eo,kstreams,latency",
                    help="comma-separated phases: bare,bare_default,alo,eo,kstreams,latency "
                         "(latency_alo or latency_eo for one of the two latency runs; default: all)")
    ap.add_argument("--broker-heap", default=None,
                    help="JVM heap options of the broker, e.g. \"-Xms1g -Xmx1g\" (what Kafka's own "
                         "kafka-server-start.sh sets). Default: deploy/local/kafka.sh's smaller one, "
                         "with which a fresh broker collects garbage about twice as often: "
                         "see docs/BENCHMARKS.md, \"Afternoon\"")
    ap.add_argument("--keep-broker-dir", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run for CI: 50k events, 5 s latency runs")
    args = ap.parse_args()
    if args.smoke:
        args.events = 50_000
        args.latency_seconds = 5
        args.latency_warmup = 2
    PARTITIONS = args.partitions
    if args.broker_heap:
        os.environ["LIVETALLY_KAFKA_HEAP_OPTS"] = args.broker_heap
    only = set(args.only.split(","))
    if args.skip_peer:
        only.discard("kstreams")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outdir = OUT_ROOT / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    results = {
        "started_utc": stamp,
        "config": {"events": args.events, "partitions": args.partitions, "streams": args.streams,
                   "latency_seconds": args.latency_seconds, "latency_rate": args.latency_rate,
                   "latency_warmup": args.latency_warmup,
                   "peer_threads": args.peer_threads, "smoke": args.smoke, "phases": sorted(only),
                   "broker_heap": os.environ.get("LIVETALLY_KAFKA_HEAP_OPTS")},
        "machine": {"nproc": os.cpu_count(), "uname": " ".join(os.uname())},
        "loadavg_before": loadavg(),
        "throughput": [],
        "latency": [],
    }
    try:
        results["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                        stdout=subprocess.PIPE, text=True).stdout.strip()
        results["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO,
                                                   stdout=subprocess.PIPE, text=True).stdout.strip())
        with open("/proc/cpuinfo") as f:
            model = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        results["machine"]["cpu"] = model[0] if model else None
        with open("/proc/meminfo") as f:
            results["machine"]["mem_total_kb"] = int(f.readline().split()[1])
    except OSError:
        pass

    def on_signal(signum, frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    broker_started = False
    exit_code = 0
    try:
        if not args.skip_build:
            build("kstreams" not in only, outdir)
        # A fresh broker each run (stop one left by an interrupted run first).
        subprocess.run([str(KAFKA_SH), "stop", str(BROKER_DIR)], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(BROKER_DIR, ignore_errors=True)
        log("starting the broker")
        broker_started = True
        brokers = kafka("start", BROKER_DIR, timeout=300).splitlines()[-1]
        results["brokers"] = brokers
        log(f"broker at {brokers}")
        topic = "events"
        create_topic(topic, args.partitions)

        if only & {"bare", "bare_default", "alo", "eo", "kstreams"}:
            # Event time: gen advances `ts` by 1 ms per record with --events (its
            # default density of 1,000 events/s), so N records span N ms. Start
            # far enough back that the newest is an hour old: the live clock
            # guard (5 min ahead) accepts everything.
            start_ts = now_ms() - args.events - 3_600_000
            log(f"preloading {args.events:,} events")
            phase = Phase()
            t0 = time.monotonic()
            gen = Child("preload_gen", [
                LIVETALLY, "gen", "--brokers", brokers, "--topic", topic, "--events", args.events,
                "--streams", args.streams, "--seed", 1, "--format", "json", "--duplicate-rate", "0.02",
                "--invalid-rate", "0.005", "--start-ts", start_ts, "--partitions", args.partitions],
                outdir)
            code = gen.wait()
            gen.close()
            if code != 0:
                raise RuntimeError(f"preload gen failed ({code}); see {gen.log_path}")
            pre = {"seconds": round(time.monotonic() - t0, 2), "start_ts": start_ts}
            for line in gen.stderr_lines:
                if line.startswith("{") and "produced" in line:
                    pre["gen"] = json.loads(line)
            pre.update(gen.usage())
            pre.update(phase.end())
            try:
                pre["broker_data_mb"] = round(sum(
                    f.stat().st_size for f in (BROKER_DIR / "data").rglob("*") if f.is_file()) / 2**20)
            except OSError:
                pass
            results["preload"] = pre
            log(f"preload: {pre}")
        n = args.events
        timeout = max(600, n / 5_000)
        run_id = stamp.lower()

        def attempt(fn, name, key, *a):
            try:
                r = fn(*a)
            except Interrupted:
                raise
            except Exception as e:  # keep measuring the others
                log(f"{name} failed: {e}")
                r = {"name": name, "key": key, "error": str(e)}
            log(f"{name}: {json.dumps({k: v for k, v in r.items() if k not in ('metrics',)})}")
            return r

        if "bare" in only:
            name = "bare rdkafka consumer (fetch.queue.backoff.ms=10)"
            results["throughput"].append(attempt(run_bare, name, "bare", brokers, topic, n,
                                                 outdir, timeout, BARE_TUNING, name, "bare"))
        if "bare_default" in only:
            name = "bare rdkafka consumer (librdkafka defaults)"
            results["throughput"].append(attempt(run_bare, name, "bare_default", brokers, topic,
                                                 n, outdir, timeout, [], name, "bare_default"))
        if "alo" in only:
            results["throughput"].append(attempt(
                run_livetally, "livetally at-least-once", "alo", "livetally at-least-once", "alo",
                brokers, topic, n, "at-least-once", None, f"alo-{run_id}", outdir, timeout))
        if "eo" in only:
            results["throughput"].append(attempt(
                run_livetally, "livetally exactly-once (100 ms)", "eo",
                "livetally exactly-once (100 ms)", "eo",
                brokers, topic, n, "exactly-once", 100, f"eo-{run_id}", outdir, timeout))
        if "kstreams" in only:
            statedir = outdir / "ks-state"
            results["throughput"].append(attempt(
                run_peer, "Kafka Streams peer", "kstreams", brokers, topic, n, run_id, outdir,
                max(900, n / 2_500), args.peer_threads, statedir))
            shutil.rmtree(statedir, ignore_errors=True)
        if only & {"latency", "latency_alo", "latency_eo"} and results["throughput"]:
            # The latency runs get a broker of their own: the catch-up phases
            # leave it compacting gigabytes of changelogs (the peer's above
            # all) for minutes, which would run beside them.
            log("restarting the broker for the latency runs")
            kafka("stop", BROKER_DIR)
            shutil.rmtree(BROKER_DIR, ignore_errors=True)
            brokers = kafka("start", BROKER_DIR, timeout=300).splitlines()[-1]
            log(f"broker at {brokers}")
        if only & {"latency", "latency_alo"}:
            results["latency"].append(attempt(
                run_latency, "latency at-least-once", "alo", brokers, "alo", "at-least-once", 1000, 20,
                args.latency_rate, args.latency_seconds, args.streams, f"alo-{run_id}", outdir,
                args.latency_warmup))
        if only & {"latency", "latency_eo"}:
            results["latency"].append(attempt(
                run_latency, "latency exactly-once", "eo", brokers, "eo", "exactly-once", 100, None,
                args.latency_rate, args.latency_seconds, args.streams, f"eo-{run_id}", outdir,
                args.latency_warmup))
    except Interrupted as e:
        log(f"interrupted ({e}); cleaning up")
        results["interrupted"] = str(e)
        exit_code = 130
    except Exception as e:
        log(f"error: {e}")
        results["error"] = str(e)
        exit_code = 1
    finally:
        # No more interruptions while cleaning up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for c in CHILDREN:
            try:
                c.terminate(20)
                c.close()
            except Exception as e:  # noqa: BLE001 - keep cleaning
                log(f"stopping {c.name}: {e}")
        if broker_started:
            log("stopping the broker")
            subprocess.run([str(KAFKA_SH), "stop", str(BROKER_DIR)], cwd=REPO,
                           stdout=subprocess.DEVNULL)
            if not args.keep_broker_dir:
                shutil.rmtree(BROKER_DIR, ignore_errors=True)
        try:
            (outdir / PEER_JAR.name).unlink()  # the private copy of the peer's jar
        except OSError:
            pass
        results["loadavg_after"] = loadavg()
        results["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        table = report(results)
        path = OUT_ROOT / f"results-{stamp}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(table)
        print(f"\nresults: {path.relative_to(REPO)} (logs in {outdir.relative_to(REPO)}/)")
        if not exit_code and (any("error" in r for r in results["throughput"] + results["latency"])):
            exit_code = 1
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

package livetally.peer.kstreams;

import java.util.ArrayList;
import java.util.List;

/** The command line. {@code --name value} or {@code --name=value}. */
final class Options {
    static final String USAGE = String.join("\n",
            "usage: java -jar livetally-kstreams-peer.jar --brokers B --topic T --output O --app-id ID",
            "           [--threads N] [--store rocksdb|memory] [--eos] [--commit-ms N]",
            "           [--exit-after-idle-ms N] [--expected-records N]",
            "           [--state-dir DIR] [--cleanup-on-exit] [--dedup-retention-ms N]",
            "           [--max-future-skew-ms N] [--commission-ppm N] [--prop key=value]...",
            "",
            "  --brokers B               bootstrap servers (host:port[,...])",
            "  --topic T                 input topic (JSON viewer events, key = stream_id)",
            "  --output O                rollup topic (key stream_id, JSON cumulative rollup)",
            "  --app-id ID               application.id: consumer group, state and internal-topic prefix",
            "  --threads N               num.stream.threads (default 1)",
            "  --store rocksdb|memory    state stores (default rocksdb); changelogged either way",
            "  --eos                     processing.guarantee=exactly_once_v2 (default at_least_once)",
            "  --commit-ms N             commit.interval.ms (default 1000, also with --eos)",
            "  --expected-records N      stop once N input records (valid or not) are processed,",
            "                            committed, and the app is closed; print the report line",
            "  --exit-after-idle-ms N    stop when no record arrived for N ms (0 = never, default)",
            "  --state-dir DIR           state.dir (default <tmp>/livetally-kstreams-peer)",
            "  --cleanup-on-exit         delete this app id's local state after closing",
            "  --dedup-retention-ms N    duplicate-detection horizon around ts (default 600000)",
            "  --max-future-skew-ms N    ts may be at most N ms ahead of the clock (default 300000; 0 = off)",
            "  --commission-ppm N        commission rate in parts per million (default 100000 = 10 %)",
            "  --prop key=value          any other Kafka Streams / client config (repeatable, applied last)",
            "",
            "stdout: one JSON line {\"records\": N, \"seconds\": S, \"records_per_second\": R, \"streams\": K}",
            "exit: 0 done; 2 bad usage; 1 Kafka Streams failed; 3 stopped idle before --expected-records");

    String brokers;
    String topic;
    String output;
    String appId;
    int threads = 1;
    PeerTopology.StoreKind store = PeerTopology.StoreKind.ROCKSDB;
    boolean eos;
    long commitMs = 1000;
    long exitAfterIdleMs;
    long expectedRecords;
    String stateDir = System.getProperty("java.io.tmpdir") + "/livetally-kstreams-peer";
    boolean cleanupOnExit;
    long dedupRetentionMs = 600_000;
    long maxFutureSkewMs = 300_000;
    long commissionPpm = 100_000;
    final List<String[]> props = new ArrayList<>();

    static final class UsageException extends Exception {
        UsageException(String message) {
            super(message);
        }
    }

    static Options parse(String[] args) throws UsageException {
        Options o = new Options();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String name = a;
            String inline = null;
            int eq = a.indexOf('=');
            if (a.startsWith("--") && eq > 0) {
                name = a.substring(0, eq);
                inline = a.substring(eq + 1);
            }
            switch (name) {
                case "-h":
                case "--help":
                    throw new UsageException(null);
                case "--eos":
                    o.eos = true;
                    continue;
                case "--cleanup-on-exit":
                    o.cleanupOnExit = true;
                    continue;
                default:
                    break;
            }
            String v;
            if (inline != null) {
                v = inline;
            } else if (i + 1 < args.length) {
                v = args[++i];
            } else {
                throw new UsageException(name + " needs a value");
            }
            switch (name) {
                case "--brokers": o.brokers = v; break;
                case "--topic": o.topic = v; break;
                case "--output": o.output = v; break;
                case "--app-id": o.appId = v; break;
                case "--threads": o.threads = (int) number(name, v, 1); break;
                case "--store":
                    switch (v) {
                        case "rocksdb": o.store = PeerTopology.StoreKind.ROCKSDB; break;
                        case "memory": o.store = PeerTopology.StoreKind.MEMORY; break;
                        default: throw new UsageException("--store must be rocksdb or memory, got '" + v + "'");
                    }
                    break;
                case "--commit-ms": o.commitMs = number(name, v, 0); break;
                case "--exit-after-idle-ms": o.exitAfterIdleMs = number(name, v, 0); break;
                case "--expected-records": o.expectedRecords = number(name, v, 0); break;
                case "--state-dir": o.stateDir = v; break;
                case "--dedup-retention-ms": o.dedupRetentionMs = number(name, v, 1); break;
                case "--max-future-skew-ms": o.maxFutureSkewMs = number(name, v, 0); break;
                case "--commission-ppm": o.commissionPpm = number(name, v, 0); break;
                case "--prop": {
                    int k = v.indexOf('=');
                    if (k <= 0) {
                        throw new UsageException("--prop wants key=value, got '" + v + "'");
                    }
                    o.props.add(new String[] {v.substring(0, k), v.substring(k + 1)});
                    break;
                }
                default:
                    throw new UsageException("unknown argument '" + a + "'");
            }
        }
        if (o.brokers == null || o.topic == null || o.output == null || o.appId == null) {
            throw new UsageException("--brokers, --topic, --output and --app-id are required");
        }
        return o;
    }

    private static long number(String name, String v, long min) throws UsageException {
        long n;
        try {
            n = Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw new UsageException(name + " wants an integer, got '" + v + "'");
        }
        if (n < min) {
            throw new UsageException(name + " must be at least " + min + ", got " + n);
        }
        return n;
    }
}

package livetally.peer.kstreams;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.InvalidStateStoreException;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;

/**
 * livetally's Kafka Streams peer: runs the topology of {@link PeerTopology}
 * and, for benchmarks, stops by itself once {@code --expected-records} input
 * records were processed and committed (or after {@code --exit-after-idle-ms}
 * without input), then prints one JSON report line on stdout.
 */
public final class Main {
    private static final int EXIT_OK = 0;
    private static final int EXIT_FAILED = 1;
    private static final int EXIT_USAGE = 2;
    private static final int EXIT_INCOMPLETE = 3;

    private static volatile boolean signalled;
    private static final CountDownLatch FINISHED = new CountDownLatch(1);

    private Main() {}

    public static void main(String[] args) {
        Options o;
        try {
            o = Options.parse(args);
        } catch (Options.UsageException e) {
            if (e.getMessage() == null) {
                System.out.println(Options.USAGE);
                System.exit(EXIT_OK);
            }
            System.err.println("kstreams-peer: " + e.getMessage());
            System.err.println(Options.USAGE);
            System.exit(EXIT_USAGE);
            return;
        }
        // SIGTERM / Ctrl-C: handled, not a JVM shutdown, so run() closes Kafka
        // Streams cleanly, prints its line and exits 0 through System.exit.
        for (String sig : new String[] {"TERM", "INT"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> signalled = true);
            } catch (IllegalArgumentException | UnsupportedOperationException e) {
                // not available here: the shutdown hook below still closes cleanly
            }
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            // Any other shutdown (e.g. SIGHUP): let run() close cleanly first.
            if (FINISHED.getCount() == 0) {
                return;
            }
            signalled = true;
            try {
                FINISHED.await(90, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
                Thread.currentThread().interrupt();
            }
        }, "kstreams-peer-shutdown"));
        int code = EXIT_FAILED;
        try {
            code = run(o);
        } catch (Throwable t) { // never leave the JVM hanging on Kafka's non-daemon threads
            System.err.println("kstreams-peer: failed: " + t);
            t.printStackTrace();
        } finally {
            FINISHED.countDown();
        }
        System.exit(code); // (blocks harmlessly if a shutdown is already under way)
    }

    static Properties streamsConfig(Options o) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, o.appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.brokers);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.threads);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                o.eos ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        // Set explicitly: under exactly_once_v2 Kafka Streams would default to 100 ms.
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, o.commitMs);
        // Changelog (and any repartition) topics on a one-broker cluster.
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.STATE_DIR_CONFIG, o.stateDir);
        // Every serde is given explicitly in the topology; these only back stray uses.
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        for (String[] kv : o.props) {
            p.put(kv[0], kv[1]);
        }
        return p;
    }

    static int run(Options o) {
        RunStats stats = new RunStats(o.expectedRecords);
        Topology topology = PeerTopology.build(new PeerTopology.Settings(
                o.topic, o.output, o.store, Duration.ofMillis(o.dedupRetentionMs),
                o.maxFutureSkewMs, o.commissionPpm), stats);
        KafkaStreams streams = new KafkaStreams(topology, streamsConfig(o));
        AtomicReference<Throwable> failure = new AtomicReference<>();
        AtomicReference<Long> runningSince = new AtomicReference<>();
        streams.setUncaughtExceptionHandler(ex -> {
            failure.compareAndSet(null, ex);
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, old) -> {
            if (now == KafkaStreams.State.RUNNING) {
                runningSince.compareAndSet(null, System.nanoTime());
            }
        });

        streams.start();
        String why;
        while (true) {
            if (stats.expectedReached()) {
                why = "expected";
                break;
            }
            KafkaStreams.State st = streams.state();
            if (failure.get() != null || st == KafkaStreams.State.ERROR
                    || st == KafkaStreams.State.PENDING_ERROR
                    || st == KafkaStreams.State.PENDING_SHUTDOWN
                    || st == KafkaStreams.State.NOT_RUNNING) {
                why = "failed";
                break;
            }
            if (signalled) {
                why = "signal";
                break;
            }
            Long since = runningSince.get();
            if (o.exitAfterIdleMs > 0 && since != null) {
                long last = stats.lastNanos() != 0 ? Math.max(since, stats.lastNanos()) : since;
                if (System.nanoTime() - last > o.exitAfterIdleMs * 1_000_000L) {
                    why = "idle";
                    break;
                }
            }
            sleep(10);
        }

        long streamCount = -1;
        if (!why.equals("failed")) {
            if (!why.equals("signal")) {
                // Wait until the processed input is committed: at a commit Kafka
                // Streams flushes the record caches and stores, has the rollups
                // acknowledged by the broker, then commits the input offsets.
                awaitCommitted(o, Duration.ofMillis(2 * o.commitMs + 10_000));
            }
            streamCount = countStreams(streams);
        }
        boolean closed = streams.close(Duration.ofSeconds(60)); // commits once more; clean shutdown
        if (o.cleanupOnExit && closed) {
            deleteLocalState(o); // (KafkaStreams.cleanUp() leaves the app directory behind)
        }

        double seconds = stats.reportSeconds();
        long records = stats.reportRecords();
        double rps = seconds > 0 ? records / seconds : 0.0;
        System.err.printf(Locale.ROOT,
                "kstreams-peer: stop=%s processed=%d valid_or_dup=%d invalid=%d %s duplicates=%d "
                        + "streams=%d threads=%d store=%s guarantee=%s commit_ms=%d closed=%s "
                        + "jvm_cpu_seconds=%.2f (over %.2f s)%n",
                why, stats.processed(), stats.processed() - stats.invalidTotal(), stats.invalidTotal(),
                stats.invalidByReason(), stats.duplicates(), streamCount, o.threads,
                o.store.name().toLowerCase(Locale.ROOT), o.eos ? "exactly_once_v2" : "at_least_once",
                o.commitMs, closed, stats.reportCpuSeconds(), stats.reportSeconds());
        if (why.equals("failed")) {
            Throwable t = failure.get();
            System.err.println("kstreams-peer: Kafka Streams failed (state " + streams.state() + ")"
                    + (t != null ? ": " + t : ""));
            if (t != null) {
                t.printStackTrace();
            }
            return EXIT_FAILED;
        }
        System.out.printf(Locale.ROOT,
                "{\"records\": %d, \"seconds\": %.6f, \"records_per_second\": %.1f, \"streams\": %d}%n",
                records, seconds, rps, streamCount);
        System.out.flush();
        if (!closed) {
            System.err.println("kstreams-peer: Kafka Streams did not close within 60 s");
            return EXIT_FAILED;
        }
        if (o.expectedRecords > 0 && !stats.expectedReached()) {
            System.err.printf("kstreams-peer: stopped (%s) after %d of %d expected records%n",
                    why, stats.processed(), o.expectedRecords);
            return EXIT_INCOMPLETE;
        }
        return EXIT_OK;
    }

    /**
     * Polls the app's committed offsets until they reach the input topic's end
     * offsets (as of now), or the timeout passes. Returns whether they did.
     */
    private static boolean awaitCommitted(Options o, Duration timeout) {
        Map<String, Object> conf = new HashMap<>();
        conf.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, o.brokers);
        for (String[] kv : o.props) { // security settings, if any, apply to the admin client too
            if (kv[0].startsWith("security.") || kv[0].startsWith("sasl.") || kv[0].startsWith("ssl.")) {
                conf.put(kv[0], kv[1]);
            }
        }
        long deadline = System.nanoTime() + timeout.toNanos();
        try (Admin admin = Admin.create(conf)) {
            TopicDescription d = admin.describeTopics(List.of(o.topic)).allTopicNames()
                    .get(10, TimeUnit.SECONDS).get(o.topic);
            Map<TopicPartition, OffsetSpec> req = d.partitions().stream().collect(Collectors.toMap(
                    pi -> new TopicPartition(o.topic, pi.partition()), pi -> OffsetSpec.latest()));
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> end =
                    admin.listOffsets(req).all().get(10, TimeUnit.SECONDS);
            while (System.nanoTime() < deadline) {
                Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(o.appId)
                        .partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
                boolean all = true;
                for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e : end.entrySet()) {
                    long endOffset = e.getValue().offset();
                    OffsetAndMetadata c = committed.get(e.getKey());
                    if (endOffset > 0 && (c == null || c.offset() < endOffset)) {
                        all = false;
                        break;
                    }
                }
                if (all) {
                    return true;
                }
                sleep(50);
            }
            System.err.println("kstreams-peer: committed offsets did not reach the end offsets within "
                    + timeout.toMillis() + " ms (more input than expected?); closing anyway");
        } catch (Exception e) {
            System.err.println("kstreams-peer: could not check committed offsets (" + e
                    + "); waiting one commit interval instead");
            sleep(o.commitMs + 500);
        }
        return false;
    }

    /** Streams aggregated by this instance: the keys of its rollup store (interactive query). */
    private static long countStreams(KafkaStreams streams) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            try {
                ReadOnlyKeyValueStore<String, StreamAgg> store = streams.store(StoreQueryParameters
                        .fromNameAndType(PeerTopology.AGG_STORE, QueryableStoreTypes.keyValueStore()));
                long n = 0;
                try (KeyValueIterator<String, StreamAgg> it = store.all()) {
                    while (it.hasNext()) {
                        it.next();
                        n++;
                    }
                }
                return n;
            } catch (InvalidStateStoreException e) {
                if (System.nanoTime() > deadline) {
                    System.err.println("kstreams-peer: cannot query " + PeerTopology.AGG_STORE + ": " + e);
                    return -1;
                }
                sleep(100);
            }
        }
    }

    private static void deleteLocalState(Options o) {
        Path dir = Paths.get(o.stateDir, o.appId);
        if (!Files.isDirectory(dir)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            System.err.println("kstreams-peer: could not delete " + dir + ": " + e);
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}

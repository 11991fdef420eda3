package livetally.peer.kstreams;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * Process-wide counters shared by every stream thread: records processed
 * (valid or not), invalid records by reason, duplicates, and the times of the
 * first and last record, for the benchmark's one-line report.
 */
final class RunStats {
    private final long expected;
    private final AtomicLong processed = new AtomicLong();
    private final AtomicLong firstNanos = new AtomicLong();
    private volatile long lastNanos;
    private volatile long endNanos;
    private volatile long endCount;
    private volatile long firstCpuNanos = -1;
    private volatile long endCpuNanos = -1;
    private final CountDownLatch reached = new CountDownLatch(1);
    private final ConcurrentHashMap<String, LongAdder> invalid = new ConcurrentHashMap<>();
    private final LongAdder duplicates = new LongAdder();

    /** @param expected records after which {@link #awaitExpected} returns; 0 = never */
    RunStats(long expected) {
        this.expected = expected;
    }

    /** Called once per input record, after the topology has processed it. */
    void recordProcessed() {
        long now = System.nanoTime();
        if (firstNanos.get() == 0 && firstNanos.compareAndSet(0, now)) {
            firstCpuNanos = processCpuNanos();
        }
        lastNanos = now;
        long n = processed.incrementAndGet();
        if (n == expected) {
            endNanos = now;
            endCount = n;
            endCpuNanos = processCpuNanos();
            reached.countDown();
        }
    }

    /** CPU time of the whole JVM (all threads), or -1 where unknown. */
    static long processCpuNanos() {
        java.lang.management.OperatingSystemMXBean os =
                java.lang.management.ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean) {
            return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime();
        }
        return -1;
    }

    /** JVM CPU seconds between the first record and the N-th (or now), or -1. */
    double reportCpuSeconds() {
        long first = firstCpuNanos;
        long end = expectedReached() ? endCpuNanos : processCpuNanos();
        return first < 0 || end < 0 ? -1 : (end - first) / 1e9;
    }

    void invalid(String reason) {
        invalid.computeIfAbsent(reason, r -> new LongAdder()).increment();
    }

    void duplicate() {
        duplicates.increment();
    }

    boolean expectedReached() {
        return reached.getCount() == 0;
    }

    long processed() {
        return processed.get();
    }

    long lastNanos() {
        return lastNanos;
    }

    /** Records counted for the report: N once reached, else all processed. */
    long reportRecords() {
        return expectedReached() ? endCount : processed.get();
    }

    /** Seconds from the first record processed to the last one counted. */
    double reportSeconds() {
        long first = firstNanos.get();
        if (first == 0) {
            return 0.0;
        }
        long end = expectedReached() ? endNanos : lastNanos;
        return Math.max(0, end - first) / 1e9;
    }

    long duplicates() {
        return duplicates.sum();
    }

    Map<String, Long> invalidByReason() {
        Map<String, Long> out = new TreeMap<>();
        invalid.forEach((k, v) -> out.put(k, v.sum()));
        return out;
    }

    long invalidTotal() {
        long n = 0;
        for (LongAdder a : invalid.values()) {
            n += a.sum();
        }
        return n;
    }
}

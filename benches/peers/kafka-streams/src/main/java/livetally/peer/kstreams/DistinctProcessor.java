package livetally.peer.kstreams;

import java.nio.ByteBuffer;
import java.time.Duration;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.streams.state.WindowStoreIterator;

/**
 * Stateful step before the aggregation: drops duplicates and works out the
 * "seen for the first time" facts the distinct counts need, with point
 * look-ups in two local, changelogged state stores (the key stays the
 * stream id, so this runs in the same task as the aggregate and needs no
 * repartition):
 *
 * <ul>
 *   <li>{@code dedup-store}, a window store keyed by (stream_id, event_id):
 *       an event whose key was stored within the retention (default 10 min,
 *       spec §1) of its {@code ts} is a duplicate and is dropped. The
 *       classic Kafka Streams de-duplication pattern; old segments expire by
 *       themselves.</li>
 *   <li>{@code seen-store}, a key-value store of exact per-stream
 *       memberships: viewers' presence (latest view/leave by ts, and whether
 *       they ever viewed: unique_viewers and concurrent_viewers), buyers
 *       (unique_buyers), order ids (orders) and the stream's currency (the
 *       first purchase/refund's; a later one in another currency is
 *       {@code currency_mismatch}).</li>
 * </ul>
 *
 * Keeping these sets out of the aggregate value keeps that value a few
 * hundred bytes, so the per-record (de)serialization of the DSL aggregate
 * does not grow with the number of viewers.
 */
final class DistinctProcessor implements FixedKeyProcessor<String, Event, Event> {
    static final String DEDUP_STORE = "dedup-store";
    static final String SEEN_STORE = "seen-store";

    /**
     * Dedup entries are stored at their ts rounded down to a bucket as long
     * as the dedup horizon R, and looked up over [bucket − R, bucket + R]:
     * at most three buckets, which hold every entry within R of the event's
     * ts. The window store keeps 2 × R (see {@link PeerTopology}) so that
     * rounding down never shortens the horizon. With exact times, a look-up
     * in the in-memory window store (indexed by time first) visits every
     * distinct millisecond of a 20-minute range; with one-minute buckets it
     * still spent ~30 % of the stream thread in 21 skip-list searches.
     * RocksDB (indexed by key first) is indifferent.
     */

    private static final byte[] PRESENT = {1};
    private static final byte EVER_VIEWED = 1;
    private static final byte IS_VIEW = 2;

    private final RunStats stats;
    private final long dedupMs;
    private FixedKeyProcessorContext<String, Event> context;
    private WindowStore<String, byte[]> dedup;
    private KeyValueStore<String, byte[]> seen;

    DistinctProcessor(RunStats stats, Duration dedupRetention) {
        this.stats = stats;
        this.dedupMs = dedupRetention.toMillis();
    }

    @Override
    public void init(FixedKeyProcessorContext<String, Event> context) {
        this.context = context;
        this.dedup = context.getStateStore(DEDUP_STORE);
        this.seen = context.getStateStore(SEEN_STORE);
    }

    @Override
    public void process(FixedKeyRecord<String, Event> record) {
        Event e = record.value();
        String sid = e.streamId;
        String dedupKey = key('e', sid, e.eventId);
        long bucket = e.ts - e.ts % dedupMs;
        try (WindowStoreIterator<byte[]> it =
                dedup.fetch(dedupKey, Math.max(0, bucket - dedupMs), bucket + dedupMs)) {
            if (it.hasNext()) {
                stats.duplicate();
                return;
            }
        }
        if (e.isOrderLine()) {
            String ck = key('c', sid, "");
            byte[] cur = seen.get(ck);
            if (cur == null) {
                seen.put(ck, e.currency.getBytes(java.nio.charset.StandardCharsets.US_ASCII));
            } else if (!e.currency.equals(new String(cur, java.nio.charset.StandardCharsets.US_ASCII))) {
                stats.invalid("currency_mismatch");
                return; // invalid: changes nothing, not remembered as seen
            }
        }
        dedup.put(dedupKey, PRESENT, bucket);

        switch (e.type) {
            case Event.VIEW:
            case Event.LEAVE:
                presence(e);
                break;
            case Event.PURCHASE:
                e.newBuyer = firstTime(key('b', sid, e.viewerId));
                e.newOrder = firstTime(key('o', sid, e.orderId));
                break;
            default:
                break;
        }
        context.forward(record);
    }

    private boolean firstTime(String k) {
        if (seen.get(k) != null) {
            return false;
        }
        seen.put(k, PRESENT);
        return true;
    }

    /**
     * A viewer's latest presence event by ts decides whether they are watching;
     * on equal ts a leave wins, so arrival order does not matter.
     */
    private void presence(Event e) {
        String k = key('p', e.streamId, e.viewerId);
        boolean isView = e.type == Event.VIEW;
        byte[] cur = seen.get(k);
        if (cur == null) {
            e.newViewer = isView;
            e.concurrentDelta = isView ? 1 : 0;
            seen.put(k, presenceValue((byte) (isView ? EVER_VIEWED | IS_VIEW : 0), e.ts));
            return;
        }
        ByteBuffer b = ByteBuffer.wrap(cur);
        byte flags = b.get();
        long latestTs = b.getLong();
        boolean everViewed = (flags & EVER_VIEWED) != 0;
        boolean wasView = (flags & IS_VIEW) != 0;
        e.newViewer = isView && !everViewed;
        byte newFlags = everViewed || isView ? EVER_VIEWED : 0;
        long newTs = latestTs;
        boolean nowView;
        if (e.ts > latestTs) { // the latest presence event by ts wins...
            newTs = e.ts;
            nowView = isView;
        } else if (e.ts == latestTs) { // ...and on equal ts a leave wins (as livetally)
            nowView = wasView && isView;
        } else {
            nowView = wasView;
        }
        e.concurrentDelta = (nowView ? 1 : 0) - (wasView ? 1 : 0);
        if (nowView) {
            newFlags |= IS_VIEW;
        }
        if (newFlags != flags || newTs != latestTs) {
            seen.put(k, presenceValue(newFlags, newTs));
        }
    }

    private static byte[] presenceValue(byte flags, long ts) {
        return ByteBuffer.allocate(9).put(flags).putLong(ts).array();
    }

    /** Unambiguous composite key: kind, stream id length, stream id, member id. */
    static String key(char kind, String streamId, String member) {
        return new StringBuilder(streamId.length() + member.length() + 8)
                .append(kind).append(streamId.length()).append(':')
                .append(streamId).append(member).toString();
    }
}

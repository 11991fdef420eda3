package livetally.peer.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigInteger;

/**
 * The per-stream aggregate value (the DSL {@code aggregate}'s state), stored
 * in {@code rollup-store} through {@link JsonSerde} (snake_case JSON). Only
 * counters: the exact id sets behind the distinct counts live in
 * {@link DistinctProcessor}'s store, which hands over "first seen" flags.
 */
public final class StreamAgg {
    public String sellerId;
    public String currency;
    public long firstEventTs = -1;
    public long lastEventTs = -1;
    public long views;
    public long uniqueViewers;
    public long concurrentViewers;
    public long peakConcurrentViewers;
    public long impressions;
    public long clicks;
    public long addToCarts;
    public long likes;
    public long comments;
    public long shares;
    public long follows;
    public long orders;
    public long itemsSold;
    public long gmv;
    public long refunds;
    public long uniqueBuyers;
    public long revision;

    public StreamAgg() {}

    /** The {@code Aggregator}: folds one valid, non-duplicate event in. */
    StreamAgg apply(Event e) {
        if (firstEventTs < 0 || e.ts < firstEventTs) {
            firstEventTs = e.ts;
        }
        if (e.ts > lastEventTs) {
            lastEventTs = e.ts;
        }
        if (sellerId == null && e.sellerId != null) {
            sellerId = e.sellerId;
        }
        switch (e.type) {
            case Event.VIEW:
                views++;
                if (e.newViewer) {
                    uniqueViewers++;
                }
                moveConcurrent(e.concurrentDelta);
                break;
            case Event.LEAVE:
                moveConcurrent(e.concurrentDelta);
                break;
            case Event.IMPRESSION: impressions++; break;
            case Event.CLICK: clicks++; break;
            case Event.ADD_TO_CART: addToCarts++; break;
            case Event.LIKE: likes++; break;
            case Event.COMMENT: comments++; break;
            case Event.SHARE: shares++; break;
            case Event.FOLLOW: follows++; break;
            case Event.PURCHASE:
                if (currency == null) {
                    currency = e.currency;
                }
                itemsSold += e.quantity;
                gmv += e.quantity * e.unitPrice; // both bounded: < 10^18
                if (e.newOrder) {
                    orders++;
                }
                if (e.newBuyer) {
                    uniqueBuyers++;
                }
                break;
            case Event.REFUND:
                if (currency == null) {
                    currency = e.currency;
                }
                refunds += e.quantity * e.unitPrice;
                break;
            default:
                break;
        }
        revision++;
        return this;
    }

    private void moveConcurrent(int delta) {
        concurrentViewers += delta;
        if (concurrentViewers > peakConcurrentViewers) {
            peakConcurrentViewers = concurrentViewers;
        }
    }

    private static final JsonFactory FACTORY = new JsonFactory();

    /**
     * The rollup-topic value: livetally's cumulative rollup object (spec §3)
     * with every figure of spec §2; ratios with a zero denominator are null,
     * money figures are integers in minor units rounded half away from zero.
     */
    byte[] toRollupJson(String streamId, long commissionPpm) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(768);
        long netGmv = gmv - refunds;
        try (JsonGenerator g = FACTORY.createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("kind", "cumulative");
            g.writeStringField("stream_id", streamId);
            writeNullableString(g, "seller_id", sellerId);
            writeNullableString(g, "currency", currency);
            g.writeNumberField("first_event_ts", firstEventTs);
            g.writeNumberField("last_event_ts", lastEventTs);
            g.writeNumberField("views", views);
            g.writeNumberField("unique_viewers", uniqueViewers);
            g.writeNumberField("concurrent_viewers", concurrentViewers);
            g.writeNumberField("peak_concurrent_viewers", peakConcurrentViewers);
            g.writeNumberField("impressions", impressions);
            g.writeNumberField("clicks", clicks);
            g.writeNumberField("add_to_carts", addToCarts);
            g.writeNumberField("likes", likes);
            g.writeNumberField("comments", comments);
            g.writeNumberField("shares", shares);
            g.writeNumberField("follows", follows);
            g.writeNumberField("orders", orders);
            g.writeNumberField("items_sold", itemsSold);
            g.writeNumberField("gmv", gmv);
            g.writeNumberField("refunds", refunds);
            g.writeNumberField("net_gmv", netGmv);
            g.writeNumberField("commission", divRound(netGmv, commissionPpm, 1_000_000L));
            g.writeNumberField("unique_buyers", uniqueBuyers);
            writeRatio(g, "ctr", clicks, impressions);
            writeRatio(g, "click_to_order_rate", orders, clicks);
            writeRatio(g, "conversion_rate", uniqueBuyers, uniqueViewers);
            writeMoney(g, "gpm", gmv, 1000, views);
            writeMoney(g, "aov", gmv, 1, orders);
            g.writeNumberField("revision", revision);
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }

    private static void writeNullableString(JsonGenerator g, String name, String v) throws IOException {
        if (v == null) {
            g.writeNullField(name);
        } else {
            g.writeStringField(name, v);
        }
    }

    private static void writeRatio(JsonGenerator g, String name, long num, long den) throws IOException {
        if (den == 0) {
            g.writeNullField(name);
        } else {
            g.writeNumberField(name, (double) num / (double) den);
        }
    }

    private static void writeMoney(JsonGenerator g, String name, long amount, long mul, long den)
            throws IOException {
        if (den == 0) {
            g.writeNullField(name);
        } else {
            g.writeNumberField(name, divRound(amount, mul, den));
        }
    }

    /** round(a × mul / den), ties away from zero, exact (no float, no overflow). */
    static long divRound(long a, long mul, long den) {
        BigInteger n = BigInteger.valueOf(a).multiply(BigInteger.valueOf(mul));
        BigInteger d = BigInteger.valueOf(den);
        BigInteger[] qr = n.divideAndRemainder(d);
        BigInteger q = qr[0];
        if (qr[1].abs().shiftLeft(1).compareTo(d.abs()) >= 0) {
            q = q.add(BigInteger.valueOf(n.signum() * d.signum()));
        }
        return q.longValue();
    }
}

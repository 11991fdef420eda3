package livetally.peer.kstreams;

import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;

/**
 * Stateless first step: every input record is counted here (valid or not);
 * JSON records are decoded and validated; the event, or null for a record
 * that is skipped, is forwarded with the same key (so no repartition).
 *
 * <p>Skipped, and counted by reason: invalid JSON events (livetally's reasons),
 * protobuf records ({@code content-type: application/x-protobuf}, or no header
 * and not starting with '{': reason {@code not_json}; the benchmark input is
 * JSON only), and records whose key is not the event's {@code stream_id}
 * ({@code key_mismatch}: the aggregation is {@code groupByKey}).
 */
final class ParseProcessor implements FixedKeyProcessor<String, byte[], Event> {
    private final RunStats stats;
    private final EventDecoder decoder;
    private FixedKeyProcessorContext<String, Event> context;

    ParseProcessor(RunStats stats, long maxFutureSkewMs) {
        this.stats = stats;
        this.decoder = new EventDecoder(maxFutureSkewMs);
    }

    @Override
    public void init(FixedKeyProcessorContext<String, Event> context) {
        this.context = context;
    }

    @Override
    public void process(FixedKeyRecord<String, byte[]> record) {
        try {
            context.forward(record.withValue(parse(record)));
        } finally {
            // Counted once the whole sub-topology (dedup, aggregate) has run for it.
            stats.recordProcessed();
        }
    }

    private Event parse(FixedKeyRecord<String, byte[]> record) {
        byte[] value = record.value();
        if (!isJson(record, value)) {
            stats.invalid("not_json");
            return null;
        }
        Event e;
        try {
            e = decoder.decode(value, context.currentSystemTimeMs());
        } catch (EventDecoder.Invalid invalid) {
            stats.invalid(invalid.reason);
            return null;
        }
        if (!e.streamId.equals(record.key())) {
            stats.invalid("key_mismatch");
            return null;
        }
        return e;
    }

    private static boolean isJson(FixedKeyRecord<String, byte[]> record, byte[] value) {
        Header h = record.headers().lastHeader("content-type");
        if (h != null && h.value() != null) {
            String ct = new String(h.value(), StandardCharsets.US_ASCII).trim().toLowerCase();
            if (ct.startsWith("application/json")) {
                return true;
            }
            if (ct.startsWith("application/x-protobuf") || ct.startsWith("application/protobuf")) {
                return false;
            }
        }
        // No (known) header: sniff. Empty values go on to the decoder (malformed).
        if (value == null) {
            return true;
        }
        for (byte b : value) {
            if (b != ' ' && b != '\t' && b != '\n' && b != '\r') {
                return b == '{';
            }
        }
        return true;
    }
}

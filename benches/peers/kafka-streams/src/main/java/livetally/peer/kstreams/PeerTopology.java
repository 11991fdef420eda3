package livetally.peer.kstreams;

import java.time.Duration;
import java.util.Set;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorSupplier;
import org.apache.kafka.streams.state.KeyValueBytesStoreSupplier;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.WindowBytesStoreSupplier;

/**
 * The topology, one sub-topology, no repartition:
 *
 * <pre>
 * input (String key = stream_id, byte[] value)
 *   → processValues(parse)            count every record; decode + validate JSON
 *   → filter(valid)
 *   → processValues(distinct)         dedup-store (window), seen-store (kv)
 *   → groupByKey                      (the key is already stream_id)
 *   → aggregate(StreamAgg)            rollup-store, JSON serde, record cache
 *   → toStream → mapValues(rollup JSON) → output topic
 * </pre>
 */
final class PeerTopology {
    static final String AGG_STORE = "rollup-store";

    enum StoreKind { ROCKSDB, MEMORY }

    record Settings(
            String inputTopic,
            String outputTopic,
            StoreKind store,
            Duration dedupRetention,
            long maxFutureSkewMs,
            long commissionPpm) {}

    private PeerTopology() {}

    static Topology build(Settings s, RunStats stats) {
        StreamsBuilder builder = new StreamsBuilder();
        JsonSerde<StreamAgg> aggSerde = new JsonSerde<>(StreamAgg.class);

        KStream<String, byte[]> input = builder.stream(
                s.inputTopic(), Consumed.with(Serdes.String(), Serdes.ByteArray()).withName("input"));

        KStream<String, Event> valid = input
                .processValues(() -> new ParseProcessor(stats, s.maxFutureSkewMs()), Named.as("parse"))
                .filter((streamId, event) -> event != null, Named.as("valid"));

        KTable<String, StreamAgg> rollups = valid
                .processValues(new DistinctSupplier(s, stats), Named.as("distinct"))
                .groupByKey(Grouped.with("by-stream", Serdes.String(), new JsonSerde<>(Event.class)))
                .aggregate(
                        StreamAgg::new,
                        (streamId, event, agg) -> agg.apply(event),
                        Named.as("aggregate"),
                        Materialized.<String, StreamAgg>as(aggStore(s))
                                .withKeySerde(Serdes.String())
                                .withValueSerde(aggSerde));

        rollups.toStream(Named.as("rollups"))
                .mapValues((streamId, agg) -> agg.toRollupJson(streamId, s.commissionPpm()),
                        Named.as("render"))
                .to(s.outputTopic(), Produced.with(Serdes.String(), Serdes.ByteArray()).withName("output"));

        return builder.build();
    }

    private static KeyValueBytesStoreSupplier aggStore(Settings s) {
        return s.store() == StoreKind.MEMORY
                ? Stores.inMemoryKeyValueStore(AGG_STORE)
                : Stores.persistentKeyValueStore(AGG_STORE);
    }

    /** Supplies DistinctProcessor and declares (and so connects) its two stores. */
    private static final class DistinctSupplier implements FixedKeyProcessorSupplier<String, Event, Event> {
        private final Settings s;
        private final RunStats stats;

        DistinctSupplier(Settings s, RunStats stats) {
            this.s = s;
            this.stats = stats;
        }

        @Override
        public FixedKeyProcessor<String, Event, Event> get() {
            return new DistinctProcessor(stats, s.dedupRetention());
        }

        @Override
        public Set<StoreBuilder<?>> stores() {
            // Entries sit at ts rounded down to a bucket of one horizon (see
            // DistinctProcessor), so keep two horizons' worth.
            Duration window = s.dedupRetention();
            Duration keep = window.multipliedBy(2);
            WindowBytesStoreSupplier dedup = s.store() == StoreKind.MEMORY
                    ? Stores.inMemoryWindowStore(DistinctProcessor.DEDUP_STORE, keep, window, false)
                    : Stores.persistentWindowStore(DistinctProcessor.DEDUP_STORE, keep, window, false);
            KeyValueBytesStoreSupplier seen = s.store() == StoreKind.MEMORY
                    ? Stores.inMemoryKeyValueStore(DistinctProcessor.SEEN_STORE)
                    : Stores.persistentKeyValueStore(DistinctProcessor.SEEN_STORE);
            StoreBuilder<KeyValueStore<String, byte[]>> seenBuilder =
                    Stores.keyValueStoreBuilder(seen, Serdes.String(), Serdes.ByteArray())
                            .withCachingEnabled(); // repeat viewers hit the cache; fewer changelog writes
            return Set.of(
                    Stores.windowStoreBuilder(dedup, Serdes.String(), Serdes.ByteArray()),
                    seenBuilder);
        }
    }
}

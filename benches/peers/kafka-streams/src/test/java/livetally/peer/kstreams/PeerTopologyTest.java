package livetally.peer.kstreams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyDescription;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.test.TestRecord;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PeerTopologyTest {
    /** Kafka Streams' state.dir for the TopologyTestDriver; JUnit deletes it. */
    @TempDir
    Path stateDir;

    private static final long T0 = 1_764_120_000_000L;

    private static PeerTopology.Settings settings(PeerTopology.StoreKind kind) {
        return new PeerTopology.Settings("events", "rollups", kind, Duration.ofMinutes(10), 0, 100_000);
    }

    private static String ev(String type, String eid, String sid, String vid, long ts, String extra) {
        return "{\"event_id\":\"" + eid + "\",\"type\":\"" + type + "\",\"stream_id\":\"" + sid
                + "\",\"viewer_id\":\"" + vid + "\",\"ts\":" + ts + extra + "}";
    }

    private static String buy(String eid, String sid, String vid, long ts, String order, int q, long price,
            String cur) {
        return ev("purchase", eid, sid, vid, ts, ",\"product_id\":\"sku-1\",\"order_id\":\"" + order
                + "\",\"quantity\":" + q + ",\"unit_price\":" + price + ",\"currency\":\"" + cur + "\"");
    }

    @ParameterizedTest
    @EnumSource(PeerTopology.StoreKind.class)
    void computesTheFiguresAndSkipsWhatItMust(PeerTopology.StoreKind kind) throws Exception {
        RunStats stats = new RunStats(0);
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "test");
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        try (TopologyTestDriver d = new TopologyTestDriver(PeerTopology.build(settings(kind), stats), p)) {
            TestInputTopic<String, byte[]> in =
                    d.createInputTopic("events", new StringSerializer(), new ByteArraySerializer());
            TestOutputTopic<String, byte[]> out =
                    d.createOutputTopic("rollups", new StringDeserializer(), new ByteArrayDeserializer());
            String s = "live-1";
            String[] good = {
                ev("view", "e1", s, "u1", T0, ",\"seller_id\":\"shop-3\""),
                ev("view", "e2", s, "u2", T0 + 1, ""),
                ev("view", "e1", s, "u1", T0, ""),                         // duplicate of e1
                ev("leave", "e3", s, "u1", T0 + 10, ""),                   // u1 leaves
                ev("view", "e4", s, "u1", T0 + 5, ""),                     // older than the leave: still gone
                ev("impression", "e5", s, "u2", T0 + 20, ",\"product_id\":\"sku-1\""),
                ev("impression", "e6", s, "u2", T0 + 21, ",\"product_id\":\"sku-1\""),
                ev("click", "e7", s, "u2", T0 + 22, ",\"product_id\":\"sku-1\""),
                buy("e8", s, "u2", T0 + 30, "o1", 2, 1999, "USD"),
                buy("e9", s, "u2", T0 + 31, "o1", 1, 500, "USD"),          // 2nd line of o1
                buy("e10", s, "u3", T0 + 32, "o2", 1, 1000, "USD"),
                buy("e11", s, "u3", T0 + 33, "o3", 1, 7777, "EUR"),        // currency_mismatch
                ev("refund", "e12", s, "u3", T0 + 40, ",\"product_id\":\"sku-1\",\"order_id\":\"o2\","
                        + "\"quantity\":1,\"unit_price\":1000,\"currency\":\"USD\""),
                ev("like", "e13", s, "u2", T0 + 50, ""),
            };
            for (String v : good) {
                in.pipeInput(s, v.getBytes(StandardCharsets.UTF_8));
            }
            // Invalid ones: never change a figure.
            in.pipeInput(s, "{not json".getBytes(StandardCharsets.UTF_8));
            in.pipeInput(s, "{\"type\":\"view\",\"stream_id\":\"live-1\"}".getBytes(StandardCharsets.UTF_8));
            in.pipeInput(s, ev("teleport", "x1", s, "u9", T0, "").getBytes(StandardCharsets.UTF_8));
            in.pipeInput(s, buy("x2", s, "u9", T0, "o9", 0, 100, "USD").getBytes(StandardCharsets.UTF_8));
            in.pipeInput(s, ev("view", "x3", s, "u9", -5, "").getBytes(StandardCharsets.UTF_8));
            in.pipeInput("live-2", ev("view", "x4", s, "u9", T0, "").getBytes(StandardCharsets.UTF_8));
            RecordHeaders proto = new RecordHeaders();
            proto.add("content-type", "application/x-protobuf".getBytes(StandardCharsets.US_ASCII));
            in.pipeInput(new TestRecord<>(s, new byte[] {0x0a, 0x02, 0x65, 0x31}, proto));

            Map<String, byte[]> latest = out.readKeyValuesToMap();
            assertEquals(1, latest.size());
            JsonNode r = JsonSerde.MAPPER.readTree(latest.get(s));
            assertEquals("cumulative", r.get("kind").asText());
            assertEquals(s, r.get("stream_id").asText());
            assertEquals("shop-3", r.get("seller_id").asText());
            assertEquals("USD", r.get("currency").asText());
            assertEquals(T0, r.get("first_event_ts").asLong());
            assertEquals(T0 + 50, r.get("last_event_ts").asLong());
            assertEquals(3, r.get("views").asLong());
            assertEquals(2, r.get("unique_viewers").asLong());
            assertEquals(1, r.get("concurrent_viewers").asLong());
            assertEquals(2, r.get("peak_concurrent_viewers").asLong());
            assertEquals(2, r.get("impressions").asLong());
            assertEquals(1, r.get("clicks").asLong());
            assertEquals(1, r.get("likes").asLong());
            assertEquals(2, r.get("orders").asLong());
            assertEquals(4, r.get("items_sold").asLong());
            assertEquals(2 * 1999 + 500 + 1000, r.get("gmv").asLong());
            assertEquals(1000, r.get("refunds").asLong());
            assertEquals(2 * 1999 + 500, r.get("net_gmv").asLong());
            assertEquals(450, r.get("commission").asLong()); // 449.8 → 450
            assertEquals(2, r.get("unique_buyers").asLong());
            assertEquals(0.5, r.get("ctr").asDouble(), 1e-12);
            assertEquals(2.0, r.get("click_to_order_rate").asDouble(), 1e-12);
            assertEquals(1.0, r.get("conversion_rate").asDouble(), 1e-12);
            assertEquals(1_832_667, r.get("gpm").asLong()); // 5498 × 1000 / 3 = 1832666.67
            assertEquals(2749, r.get("aov").asLong());
            assertTrue(r.get("revision").asLong() >= 1);

            assertEquals(good.length + 7, stats.processed());
            assertEquals(1, stats.duplicates());
            assertEquals(Map.of("malformed", 1L, "missing_field", 1L, "unknown_type", 1L, "bad_value", 1L,
                    "bad_timestamp", 1L, "key_mismatch", 1L, "not_json", 1L, "currency_mismatch", 1L),
                    stats.invalidByReason());
        }
    }

    @ParameterizedTest
    @EnumSource(PeerTopology.StoreKind.class)
    void catchesDuplicatesAcrossDedupBuckets(PeerTopology.StoreKind kind) throws Exception {
        RunStats stats = new RunStats(0);
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "test-dedup");
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        try (TopologyTestDriver d = new TopologyTestDriver(PeerTopology.build(settings(kind), stats), p)) {
            TestInputTopic<String, byte[]> in =
                    d.createInputTopic("events", new StringSerializer(), new ByteArraySerializer());
            long bucketEnd = T0 - T0 % 600_000 + 599_999; // last ms of a 10-minute bucket
            String s = "live-9";
            // The same event_id re-sent with a ts in the next bucket, 9 min later, and
            // one in the bucket before, 9 min earlier: both duplicates.
            in.pipeInput(s, ev("view", "d1", s, "u1", bucketEnd, "").getBytes(StandardCharsets.UTF_8));
            in.pipeInput(s, ev("view", "d1", s, "u1", bucketEnd + 540_000, "").getBytes(StandardCharsets.UTF_8));
            in.pipeInput(s, ev("view", "d1", s, "u1", bucketEnd - 540_000, "").getBytes(StandardCharsets.UTF_8));
            // Same event_id in another stream: not a duplicate.
            in.pipeInput("live-8", ev("view", "d1", "live-8", "u1", bucketEnd, "")
                    .getBytes(StandardCharsets.UTF_8));
            assertEquals(2, stats.duplicates());
            assertEquals(4, stats.processed());
        }
    }

    @Test
    void onEqualTsALeaveWins() throws Exception {
        RunStats stats = new RunStats(0);
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "test-ties");
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        try (TopologyTestDriver d = new TopologyTestDriver(
                PeerTopology.build(settings(PeerTopology.StoreKind.MEMORY), stats), p)) {
            TestInputTopic<String, byte[]> in =
                    d.createInputTopic("events", new StringSerializer(), new ByteArraySerializer());
            TestOutputTopic<String, byte[]> out =
                    d.createOutputTopic("rollups", new StringDeserializer(), new ByteArrayDeserializer());
            String s = "live-3";
            String[] evs = {
                ev("view", "t1", s, "u1", T0, ""), ev("leave", "t2", s, "u1", T0, ""),  // view, leave
                ev("leave", "t3", s, "u2", T0, ""), ev("view", "t4", s, "u2", T0, ""),  // leave, view
                ev("view", "t5", s, "u3", T0, ""), ev("view", "t6", s, "u3", T0, ""),   // view, view
            };
            for (String v : evs) {
                in.pipeInput(s, v.getBytes(StandardCharsets.UTF_8));
            }
            JsonNode r = JsonSerde.MAPPER.readTree(out.readKeyValuesToMap().get(s));
            assertEquals(1, r.get("concurrent_viewers").asLong()); // only u3
            assertEquals(3, r.get("unique_viewers").asLong());
            assertEquals(4, r.get("views").asLong());
        }
    }

    @Test
    void ratiosWithoutDenominatorAreNull() throws Exception {
        StreamAgg a = new StreamAgg();
        JsonNode r = JsonSerde.MAPPER.readTree(a.toRollupJson("s", 100_000));
        for (String f : new String[] {"ctr", "click_to_order_rate", "conversion_rate", "gpm", "aov", "currency"}) {
            assertTrue(r.get(f).isNull(), f);
        }
    }

    @Test
    void roundsHalfAwayFromZero() {
        assertEquals(3, StreamAgg.divRound(5, 1, 2));
        assertEquals(-3, StreamAgg.divRound(-5, 1, 2));
        assertEquals(333, StreamAgg.divRound(1, 1000, 3));
        assertEquals(667, StreamAgg.divRound(2, 1000, 3));
        assertEquals(Long.MAX_VALUE / 1000, StreamAgg.divRound(Long.MAX_VALUE / 1000, 1000, 1000));
    }

    @Test
    void aggregateSurvivesItsJsonSerde() {
        JsonSerde<StreamAgg> serde = new JsonSerde<>(StreamAgg.class);
        StreamAgg a = new StreamAgg();
        a.gmv = 123;
        a.currency = "USD";
        a.uniqueViewers = 7;
        StreamAgg b = serde.deserializer().deserialize("t", serde.serializer().serialize("t", a));
        assertEquals(123, b.gmv);
        assertEquals("USD", b.currency);
        assertEquals(7, b.uniqueViewers);
        String json = new String(serde.serializer().serialize("t", a), StandardCharsets.UTF_8);
        assertTrue(json.contains("\"unique_viewers\":7"), json);
    }

    @Test
    void needsNoRepartitionTopic() {
        TopologyDescription desc = PeerTopology.build(settings(PeerTopology.StoreKind.MEMORY), new RunStats(0))
                .describe();
        assertEquals(1, desc.subtopologies().size(), desc.toString());
        assertTrue(!desc.toString().contains("repartition"), desc.toString());
    }

    @Test
    void decodesRfc3339() throws Exception {
        assertEquals(1_764_120_000_123L, EventDecoder.rfc3339Ms("2025-11-26T01:20:00.123456Z"));
        assertEquals(1_764_120_000_123L, EventDecoder.rfc3339Ms("2025-11-26T02:20:00.123+01:00"));
    }
}

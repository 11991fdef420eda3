package livetally.peer.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.OffsetDateTime;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.HashSet;
import java.util.Set;

/**
 * Decodes and validates one JSON record value into an {@link Event}, with the
 * contract's field rules (spec §1) and the same reasons as livetally.
 *
 * <p>Jackson's streaming parser (no tree, no reflection) reads the object; the
 * known fields are kept as "absent / string / integer / something else" and
 * then checked in the spec table's order, the first failure being the reason:
 * {@code type} ({@code missing_field}, {@code unknown_type}), then
 * {@code event_id, stream_id, viewer_id, ts, seller_id, product_id, order_id,
 * quantity, unit_price, currency} ({@code missing_field} when absent or null,
 * {@code bad_value} / {@code bad_timestamp} when present but wrong).
 * Unknown fields are skipped; a key given twice keeps its last value.
 */
final class EventDecoder {
    static final int MAX_EVENT_BYTES = 65_536;
    static final int MAX_ID_BYTES = 128;
    static final long MAX_QUANTITY = 1_000_000L;
    static final long MAX_UNIT_PRICE = 1_000_000_000_000L;
    /** 9999-12-31T23:59:59.999Z. */
    static final long MAX_TS_MS = 253_402_300_799_999L;

    private static final JsonFactory FACTORY = new JsonFactory();
    /** ISO 4217 codes as the JDK knows them. */
    private static final Set<String> CURRENCIES = new HashSet<>();

    static {
        for (java.util.Currency c : java.util.Currency.getAvailableCurrencies()) {
            CURRENCIES.add(c.getCurrencyCode());
        }
    }

    /** Why a record was not counted. Cheap: no stack trace. */
    static final class Invalid extends Exception {
        final String reason;

        Invalid(String reason) {
            super(reason, null, false, false);
            this.reason = reason;
        }
    }

    static final Invalid MALFORMED = new Invalid("malformed");
    static final Invalid MISSING_FIELD = new Invalid("missing_field");
    static final Invalid UNKNOWN_TYPE = new Invalid("unknown_type");
    static final Invalid BAD_VALUE = new Invalid("bad_value");
    static final Invalid BAD_TIMESTAMP = new Invalid("bad_timestamp");
    static final Invalid TOO_LARGE = new Invalid("too_large");

    /** A non-string, non-integer JSON value (float, bool, array, object, huge int). */
    private static final Object OTHER = new Object();

    private final long maxFutureSkewMs;

    /** @param maxFutureSkewMs how far ahead of the wall clock {@code ts} may be; 0 = no guard */
    EventDecoder(long maxFutureSkewMs) {
        this.maxFutureSkewMs = maxFutureSkewMs;
    }

    /**
     * @param nowMs the wall clock (for the future-skew guard)
     * @throws Invalid with the record's reason
     */
    Event decode(byte[] payload, long nowMs) throws Invalid {
        if (payload == null || payload.length == 0) {
            throw MALFORMED;
        }
        if (payload.length > MAX_EVENT_BYTES) {
            throw TOO_LARGE;
        }
        Object type = null, eventId = null, streamId = null, viewerId = null, ts = null,
                sellerId = null, productId = null, orderId = null, quantity = null,
                unitPrice = null, currency = null;
        boolean typeSeen = false;
        try (JsonParser p = FACTORY.createParser(payload)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw MALFORMED;
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken v = p.nextToken();
                switch (name) {
                    case "type": type = raw(p, v); typeSeen = true; break;
                    case "event_id": eventId = raw(p, v); break;
                    case "stream_id": streamId = raw(p, v); break;
                    case "viewer_id": viewerId = raw(p, v); break;
                    case "ts": ts = raw(p, v); break;
                    case "seller_id": sellerId = raw(p, v); break;
                    case "product_id": productId = raw(p, v); break;
                    case "order_id": orderId = raw(p, v); break;
                    case "quantity": quantity = raw(p, v); break;
                    case "unit_price": unitPrice = raw(p, v); break;
                    case "currency": currency = raw(p, v); break;
                    default: p.skipChildren(); break;
                }
            }
            if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
                throw MALFORMED; // not one complete object (or trailing data)
            }
        } catch (IOException e) {
            throw MALFORMED; // JsonParseException, bad UTF-8, truncated input
        }

        Event e = new Event();
        if (type == null) {
            throw MISSING_FIELD;
        }
        if (!(type instanceof String) || (e.type = Event.typeOf((String) type)) < 0) {
            throw UNKNOWN_TYPE;
        }
        e.eventId = id(eventId);
        e.streamId = id(streamId);
        e.viewerId = id(viewerId);
        e.ts = timestamp(ts, nowMs);
        e.sellerId = sellerId(sellerId);
        switch (e.type) {
            case Event.IMPRESSION:
            case Event.CLICK:
            case Event.ADD_TO_CART:
                e.productId = id(productId);
                break;
            case Event.PURCHASE:
            case Event.REFUND:
                e.productId = id(productId);
                e.orderId = id(orderId);
                e.quantity = integer(quantity, 1, MAX_QUANTITY);
                e.unitPrice = integer(unitPrice, 0, MAX_UNIT_PRICE);
                e.currency = currency(currency);
                break;
            default:
                break;
        }
        return e;
    }

    /** The value the parser is on: null (absent/null), String, Long or OTHER. */
    private static Object raw(JsonParser p, JsonToken v) throws IOException {
        switch (v) {
            case VALUE_STRING:
                return p.getText();
            case VALUE_NUMBER_INT:
                JsonParser.NumberType nt = p.getNumberType();
                return nt == JsonParser.NumberType.BIG_INTEGER ? OTHER : (Object) p.getLongValue();
            case VALUE_NULL:
                return null;
            case START_OBJECT:
            case START_ARRAY:
                p.skipChildren();
                return OTHER;
            default:
                return OTHER;
        }
    }

    private static String id(Object raw) throws Invalid {
        if (raw == null) {
            throw MISSING_FIELD;
        }
        if (raw instanceof String) {
            String s = (String) raw;
            if (!s.isEmpty() && utf8Len(s) <= MAX_ID_BYTES) {
                return s;
            }
        }
        throw BAD_VALUE;
    }

    private static String sellerId(Object raw) throws Invalid {
        if (raw == null) {
            return null;
        }
        if (raw instanceof String) {
            String s = (String) raw;
            if (s.isEmpty()) {
                return null;
            }
            if (utf8Len(s) <= MAX_ID_BYTES) {
                return s;
            }
        }
        throw BAD_VALUE;
    }

    private long timestamp(Object raw, long nowMs) throws Invalid {
        long ms;
        if (raw == null) {
            throw MISSING_FIELD;
        } else if (raw instanceof Long) {
            ms = (Long) raw;
        } else if (raw instanceof String) {
            ms = rfc3339Ms((String) raw);
        } else {
            throw BAD_TIMESTAMP;
        }
        long latest = maxFutureSkewMs > 0 ? Math.min(MAX_TS_MS, nowMs + maxFutureSkewMs) : MAX_TS_MS;
        if (ms < 0 || ms > latest) {
            throw BAD_TIMESTAMP;
        }
        return ms;
    }

    /** RFC 3339 (with offset or Z) to epoch ms, truncating below the millisecond. */
    static long rfc3339Ms(String s) throws Invalid {
        // RFC 3339 allows a space or lower-case 't'/'z'; ISO_OFFSET_DATE_TIME wants 'T'.
        String norm = s;
        if (s.length() > 10 && (s.charAt(10) == ' ' || s.charAt(10) == 't')) {
            norm = s.substring(0, 10) + 'T' + s.substring(11);
        }
        if (norm.endsWith("z")) {
            norm = norm.substring(0, norm.length() - 1) + 'Z';
        }
        try {
            OffsetDateTime t = OffsetDateTime.parse(norm, DateTimeFormatter.ISO_OFFSET_DATE_TIME);
            long secs = t.toEpochSecond();
            if (secs < 0) {
                throw BAD_TIMESTAMP;
            }
            return Math.addExact(Math.multiplyExact(secs, 1000L), t.getNano() / 1_000_000);
        } catch (DateTimeParseException | ArithmeticException e) {
            throw BAD_TIMESTAMP;
        }
    }

    private static long integer(Object raw, long min, long max) throws Invalid {
        if (raw == null) {
            throw MISSING_FIELD;
        }
        if (raw instanceof Long) {
            long v = (Long) raw;
            if (v >= min && v <= max) {
                return v;
            }
        }
        throw BAD_VALUE;
    }

    private static String currency(Object raw) throws Invalid {
        if (raw == null) {
            throw MISSING_FIELD;
        }
        if (raw instanceof String && CURRENCIES.contains(raw)) {
            return (String) raw;
        }
        throw BAD_VALUE;
    }

    private static int utf8Len(String s) {
        int n = s.length();
        if (n * 3 <= MAX_ID_BYTES) {
            return n; // cannot exceed the limit whatever it holds; exact length not needed
        }
        return s.getBytes(StandardCharsets.UTF_8).length;
    }
}

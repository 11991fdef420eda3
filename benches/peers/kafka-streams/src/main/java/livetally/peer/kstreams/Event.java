package livetally.peer.kstreams;

/**
 * One valid viewer event (spec §1), as {@link EventDecoder} produced it, plus
 * the "first time seen" facts that {@link DistinctProcessor} adds before the
 * aggregation.
 *
 * <p>A plain public-field POJO so that {@link JsonSerde} can (de)serialize it
 * should the topology ever repartition it; as built it never leaves the JVM:
 * {@code processValues} keeps the key, so {@code groupByKey} needs no
 * repartition topic.
 */
public final class Event {
    public static final int VIEW = 0;
    public static final int LEAVE = 1;
    public static final int IMPRESSION = 2;
    public static final int CLICK = 3;
    public static final int ADD_TO_CART = 4;
    public static final int PURCHASE = 5;
    public static final int REFUND = 6;
    public static final int LIKE = 7;
    public static final int COMMENT = 8;
    public static final int SHARE = 9;
    public static final int FOLLOW = 10;

    /** The wire names, indexed by the constants above. */
    static final String[] TYPE_NAMES = {
        "view", "leave", "impression", "click", "add_to_cart", "purchase", "refund",
        "like", "comment", "share", "follow",
    };

    public int type;
    public String eventId;
    public String streamId;
    public String viewerId;
    /** Event time, epoch milliseconds. */
    public long ts;
    /** Optional; null when absent or empty. */
    public String sellerId;
    /** impression, click, add_to_cart, purchase, refund. */
    public String productId;
    /** purchase, refund. */
    public String orderId;
    public long quantity;
    /** Minor currency units. */
    public long unitPrice;
    public String currency;

    // Set by DistinctProcessor (per stream, exact, kept in state stores).
    /** A view by a viewer never seen viewing this stream before. */
    public boolean newViewer;
    /** A purchase by a viewer who never bought in this stream before. */
    public boolean newBuyer;
    /** A purchase line of an order id not seen in this stream before. */
    public boolean newOrder;
    /** Change of concurrent_viewers caused by this view/leave: -1, 0 or +1. */
    public int concurrentDelta;

    public Event() {}

    static int typeOf(String name) {
        switch (name) {
            case "view": return VIEW;
            case "leave": return LEAVE;
            case "impression": return IMPRESSION;
            case "click": return CLICK;
            case "add_to_cart": return ADD_TO_CART;
            case "purchase": return PURCHASE;
            case "refund": return REFUND;
            case "like": return LIKE;
            case "comment": return COMMENT;
            case "share": return SHARE;
            case "follow": return FOLLOW;
            default: return -1;
        }
    }

    boolean isOrderLine() {
        return type == PURCHASE || type == REFUND;
    }
}

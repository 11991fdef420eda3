#!/usr/bin/env python3
"""Independent reference for the peer's figures: reads the generator's
`stream_id<TAB>json` lines and prints, per stream, the cumulative figures of
spec §2 as one JSON object per line (sorted by stream_id), plus a summary on
stderr. Written from the spec, not from the Java code: a record is invalid if
it is not a JSON object, misses a required field, has an unknown type or a
bad value, or is a purchase/refund in a currency other than the stream's
first; a duplicate is a (stream_id, event_id) already counted.

usage: expected.py events.tsv > expected.ndjson
"""
import datetime
import json
import sys
from collections import Counter, defaultdict

TYPES = {"view", "leave", "impression", "click", "add_to_cart", "purchase", "refund",
         "like", "comment", "share", "follow"}
NEEDS_PRODUCT = {"impression", "click", "add_to_cart", "purchase", "refund"}


def div_round(n, d):
    """n / d rounded half away from zero, in integers."""
    q, r = divmod(abs(n), abs(d))
    if 2 * r >= abs(d):
        q += 1
    return q if (n >= 0) == (d > 0) else -q


def validate(key, raw):
    try:
        e = json.loads(raw)
    except ValueError:
        return None, "malformed"
    if not isinstance(e, dict):
        return None, "malformed"
    t = e.get("type")
    if t is None:
        return None, "missing_field"
    if t not in TYPES:
        return None, "unknown_type"
    req = ["event_id", "stream_id", "viewer_id", "ts"]
    if t in NEEDS_PRODUCT:
        req.append("product_id")
    if t in ("purchase", "refund"):
        req += ["order_id", "quantity", "unit_price", "currency"]
    for f in req:
        if e.get(f) is None:
            return None, "missing_field"
    if t in ("purchase", "refund") and (e["quantity"] < 1 or e["unit_price"] < 0):
        return None, "bad_value"
    if isinstance(e["ts"], str):
        t = datetime.datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        e["ts"] = int(t.timestamp()) * 1000 + t.microsecond // 1000
    if e["stream_id"] != key:
        return None, "key_mismatch"
    return e, None


def main():
    figs = defaultdict(lambda: Counter())
    first_ts, last_ts, seller, cur = {}, {}, {}, {}
    seen_events = set()
    presence = {}        # (s, v) -> [latest_ts, is_view, ever_viewed]
    concurrent = Counter()
    peak = Counter()
    buyers, orders = set(), set()
    invalid, dups, total = Counter(), 0, 0
    for line in open(sys.argv[1], encoding="utf-8"):
        total += 1
        key, raw = line.rstrip("\n").split("\t", 1)
        e, why = validate(key, raw)
        if e is None:
            invalid[why] += 1
            continue
        s, t, v, ts = e["stream_id"], e["type"], e["viewer_id"], e["ts"]
        if (s, e["event_id"]) in seen_events:
            dups += 1
            continue
        if t in ("purchase", "refund"):
            if cur.setdefault(s, e["currency"]) != e["currency"]:
                invalid["currency_mismatch"] += 1
                continue
        seen_events.add((s, e["event_id"]))
        f = figs[s]
        first_ts[s] = min(first_ts.get(s, ts), ts)
        last_ts[s] = max(last_ts.get(s, ts), ts)
        if s not in seller and e.get("seller_id"):
            seller[s] = e["seller_id"]
        if t in ("view", "leave"):
            is_view = t == "view"
            if is_view:
                f["views"] += 1
            p = presence.get((s, v))
            if p is None:
                presence[(s, v)] = [ts, is_view, is_view]
                f["unique_viewers"] += is_view
                concurrent[s] += is_view
            else:
                if is_view and not p[2]:
                    f["unique_viewers"] += 1
                    p[2] = True
                # latest presence event by ts wins; on equal ts a leave wins
                now = is_view if ts > p[0] else (p[1] and is_view) if ts == p[0] else p[1]
                concurrent[s] += int(now) - int(p[1])
                p[0], p[1] = max(p[0], ts), now
            peak[s] = max(peak[s], concurrent[s])
        elif t == "purchase":
            f["items_sold"] += e["quantity"]
            f["gmv"] += e["quantity"] * e["unit_price"]
            if (s, e["order_id"]) not in orders:
                orders.add((s, e["order_id"]))
                f["orders"] += 1
            if (s, v) not in buyers:
                buyers.add((s, v))
                f["unique_buyers"] += 1
        elif t == "refund":
            f["refunds"] += e["quantity"] * e["unit_price"]
        else:
            plural = {"add_to_cart": "add_to_carts"}.get(t, t + "s")
            f[plural] += 1
    for s in sorted(figs):
        f = figs[s]
        net = f["gmv"] - f["refunds"]
        row = {"stream_id": s, "seller_id": seller.get(s), "currency": cur.get(s),
               "first_event_ts": first_ts[s], "last_event_ts": last_ts[s]}
        for k in ("views", "unique_viewers"):
            row[k] = f[k]
        row["concurrent_viewers"] = concurrent[s]
        row["peak_concurrent_viewers"] = peak[s]
        for k in ("impressions", "clicks", "add_to_carts", "likes", "comments", "shares", "follows",
                  "orders", "items_sold", "gmv", "refunds"):
            row[k] = f[k]
        row["net_gmv"] = net
        row["commission"] = div_round(net, 10)
        row["unique_buyers"] = f["unique_buyers"]
        row["ctr"] = f["clicks"] / f["impressions"] if f["impressions"] else None
        row["click_to_order_rate"] = f["orders"] / f["clicks"] if f["clicks"] else None
        row["conversion_rate"] = (f["unique_buyers"] / f["unique_viewers"]
                                  if f["unique_viewers"] else None)
        row["gpm"] = div_round(f["gmv"] * 1000, f["views"]) if f["views"] else None
        row["aov"] = div_round(f["gmv"], f["orders"]) if f["orders"] else None
        print(json.dumps(row))
    print(json.dumps({"records": total, "invalid": dict(sorted(invalid.items())),
                      "duplicates": dups, "streams": len(figs)}), file=sys.stderr)


if __name__ == "__main__":
    main()

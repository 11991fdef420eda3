#!/usr/bin/env python3
"""Writes test input for the Kafka Streams peer: one record per line,
`stream_id<TAB>json`, for Kafka's ConsoleProducer with parse.key=true and
key.separator=TAB.

Deterministic for a given --seed. A live-shopping mix (views and leaves,
impressions, clicks, carts, purchases with multi-line orders, refunds,
likes...), event times from two hours ago on, a little out of order; with
--dup-rate some events are sent again (as producers do, at least once), and
with --invalid-rate some records are invalid (bad JSON, a missing field, an
unknown type, a zero quantity, a purchase in another currency). Event time
advances 1 ms per record on average (--events-per-second 1000), like
`livetally gen`'s default.

5 % of the events carry `ts` as an RFC 3339 string instead of epoch ms.

usage: gen_events.py [--records N] [--streams S] [--viewers V] [--seed N]
                     [--dup-rate F] [--invalid-rate F] [--events-per-second N] > events.tsv
"""
import argparse
import datetime
import json
import random
import sys
import time

MIX = [("view", 30), ("leave", 10), ("impression", 25), ("click", 10),
       ("add_to_cart", 5), ("purchase", 4), ("refund", 0.5), ("like", 8),
       ("comment", 4), ("share", 2), ("follow", 1.5)]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "BRL"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--viewers", type=int, default=2_000, help="viewer pool per stream")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dup-rate", type=float, default=0.02)
    ap.add_argument("--invalid-rate", type=float, default=0.005)
    ap.add_argument("--events-per-second", type=int, default=1000,
                    help="event-time density: ts advances 1000/N ms per record on average "
                         "(as livetally gen's --rate)")
    a = ap.parse_args()

    rnd = random.Random(a.seed)
    types = [t for t, _ in MIX]
    weights = [w for _, w in MIX]
    streams = [f"live-{i}" for i in range(a.streams)]
    currency = {s: CURRENCIES[i % len(CURRENCIES)] for i, s in enumerate(streams)}
    seller = {s: f"shop-{i % 7}" for i, s in enumerate(streams)}
    recent = {s: [] for s in streams}      # last events per stream, for duplicates
    open_order = {}                        # (stream, viewer) -> order id
    ts = int(time.time() * 1000) - 2 * 3600 * 1000
    step = 2000 / max(1, a.events_per_second)   # uniform 0..step: mean 1000/N ms
    tsf = float(ts)
    out = sys.stdout
    seq = 0
    for _ in range(a.records):
        tsf += rnd.uniform(0, step)
        ts = int(tsf)
        s = rnd.choice(streams)
        r = rnd.random()
        if r < a.dup_rate and recent[s]:
            out.write(f"{s}\t{rnd.choice(recent[s])}\n")
            continue
        seq += 1
        t = rnd.choices(types, weights)[0]
        v = f"u-{rnd.randrange(a.viewers)}"
        ev = {"event_id": f"{s}-e{seq}", "type": t, "stream_id": s, "viewer_id": v,
              "ts": ts - (rnd.randint(0, 30_000) if rnd.random() < 0.05 else 0)}
        if rnd.random() < 0.05:
            ev["ts"] = (datetime.datetime.fromtimestamp(ev["ts"] / 1000, tz=datetime.timezone.utc)
                        .isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        if rnd.random() < 0.5:
            ev["seller_id"] = seller[s]
        if t in ("impression", "click", "add_to_cart", "purchase", "refund"):
            ev["product_id"] = f"sku-{rnd.randrange(40)}"
        if t in ("purchase", "refund"):
            key = (s, v)
            if t == "purchase" and key in open_order and rnd.random() < 0.3:
                order = open_order[key]              # another line of the same order
            else:
                order = f"o-{s}-{seq}"
                open_order[key] = order
            ev.update(order_id=order, quantity=rnd.randint(1, 3),
                      unit_price=rnd.choice([99, 500, 1999, 4999, 12900]),
                      currency=currency[s])
        line = json.dumps(ev, separators=(",", ":"))
        if r < a.dup_rate + a.invalid_rate:
            kind = rnd.randrange(5)
            if kind == 0:
                line = line[: len(line) // 2]                      # malformed
            elif kind == 1:
                del ev["viewer_id"]                                # missing_field
                line = json.dumps(ev, separators=(",", ":"))
            elif kind == 2:
                ev["type"] = "teleport"                            # unknown_type
                line = json.dumps(ev, separators=(",", ":"))
            elif kind == 3:
                ev.update(type="purchase", product_id="sku-1", order_id=f"o-bad-{seq}",
                          quantity=0, unit_price=100, currency=currency[s])  # bad_value
                line = json.dumps(ev, separators=(",", ":"))
            else:
                other = CURRENCIES[(CURRENCIES.index(currency[s]) + 1) % len(CURRENCIES)]
                ev.update(type="purchase", product_id="sku-1", order_id=f"o-x-{seq}",
                          quantity=1, unit_price=100, currency=other)  # currency_mismatch
                line = json.dumps(ev, separators=(",", ":"))
        else:
            recent[s].append(line)
            if len(recent[s]) > 100:
                recent[s].pop(0)
        out.write(f"{s}\t{line}\n")


if __name__ == "__main__":
    main()

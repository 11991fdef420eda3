//! Hand-written cases for every figure and every outcome.

use std::collections::HashSet;

use super::*;
use crate::changelog::{piece_key, Key, PieceKind};
use crate::event::{Action, Currency};
use crate::stream::CheckpointError;
use crate::testkit::*;

// --- audience -------------------------------------------------------------

#[test]
fn views_count_every_view_and_unique_viewers_count_viewers() {
    let mut f = Feed::new();
    for (viewer, ts) in [("a", 1), ("b", 2), ("a", 3), ("a", 4)] {
        assert_eq!(f.send(viewer, ts, Action::View), Outcome::Counted);
    }
    // A leave or a purchase is not a view.
    let _ = f.send("c", 5, Action::Leave);
    let _ = f.send("d", 6, purchase("p", "o", 1, 100));
    let r = f.rollup();
    assert_eq!(r.views, 4);
    assert_eq!(r.unique_viewers, 2);
}

#[test]
fn concurrent_viewers_follow_each_viewers_latest_presence() {
    let mut f = Feed::new();
    let _ = f.send("a", 10, Action::View);
    let _ = f.send("b", 11, Action::View);
    let _ = f.send("c", 12, Action::View);
    assert_eq!(f.rollup().concurrent_viewers, 3);
    let _ = f.send("b", 20, Action::Leave);
    assert_eq!(f.rollup().concurrent_viewers, 2);
    // Back again.
    let _ = f.send("b", 30, Action::View);
    assert_eq!(f.rollup().concurrent_viewers, 3);
    // A leave without a view first: never present.
    let _ = f.send("d", 31, Action::Leave);
    assert_eq!(f.rollup().concurrent_viewers, 3);
    // Two views in a row keep one viewer present once.
    let _ = f.send("a", 40, Action::View);
    assert_eq!(f.rollup().concurrent_viewers, 3);
}

#[test]
fn an_older_presence_event_changes_nothing() {
    let mut f = Feed::new();
    let _ = f.send("a", 100, Action::Leave);
    // The view happened before the leave: it arrives late and loses.
    assert_eq!(f.send("a", 50, Action::View), Outcome::Counted);
    let r = f.rollup();
    assert_eq!(r.concurrent_viewers, 0);
    assert_eq!(r.views, 1, "still a counted view");
    assert_eq!(r.unique_viewers, 1);

    let _ = f.send("b", 100, Action::View);
    let _ = f.send("b", 50, Action::Leave);
    assert_eq!(f.rollup().concurrent_viewers, 1);
}

#[test]
fn at_equal_ts_leave_wins_whatever_the_arrival_order() {
    let mut f = Feed::new();
    let _ = f.send("a", 100, Action::View);
    let _ = f.send("a", 100, Action::Leave);
    let _ = f.send("b", 100, Action::Leave);
    let _ = f.send("b", 100, Action::View);
    assert_eq!(f.rollup().concurrent_viewers, 0);
    // Same ts, same type: nothing changes.
    let _ = f.send("c", 7, Action::View);
    let _ = f.send("c", 7, Action::View);
    assert_eq!(f.rollup().concurrent_viewers, 1);
}

#[test]
fn a_leave_at_the_instant_presence_settled_to_lowers_a_peak_reached_only_there() {
    // u5 arrives at 210 s and settles once another stream's event moves the
    // watermark on; u0's view at 0 and leave at 210 s come after. At 210 s
    // u0 has left as u5 arrived: one viewer at every instant, though two
    // were counted until the leave came. (The order a restore can replay
    // a partition in: a property test found it.)
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    for (position, e) in (0..).zip([
        event("e0", "s1", "u5", 210_000, Action::View),
        event("x", "s0", "u4", 300_000, Action::Like),
        event("e1", "s1", "u0", 0, Action::View),
        event("e3", "s1", "u0", 210_000, Action::Leave),
    ]) {
        let _ = agg.apply(&e, position);
    }
    let _ = agg.publish();
    let rollup = agg.rollup("s1").unwrap();
    assert_eq!(
        (rollup.concurrent_viewers, rollup.peak_concurrent_viewers),
        (1, 1)
    );
    let peaks: Vec<u64> = agg
        .windows("s1")
        .unwrap()
        .iter()
        .map(|w| w.peak_concurrent_viewers)
        .collect();
    assert_eq!(peaks, [1, 1]);
}

#[test]
fn peak_concurrent_viewers_keeps_the_highest_count_seen() {
    let mut f = Feed::new();
    assert_eq!(f.send("a", 1, Action::View), Outcome::Counted);
    let _ = f.send("b", 2, Action::View);
    let _ = f.send("c", 3, Action::View);
    let _ = f.send("a", 4, Action::Leave);
    let _ = f.send("b", 5, Action::Leave);
    let r = f.rollup();
    assert_eq!(r.concurrent_viewers, 1);
    assert_eq!(r.peak_concurrent_viewers, 3);
    let _ = f.send("a", 6, Action::View);
    assert_eq!(f.rollup().peak_concurrent_viewers, 3);
}

// --- engagement -----------------------------------------------------------

#[test]
fn each_event_type_is_counted_on_its_own() {
    let mut f = Feed::new();
    let sends: [(Action<'static>, usize); 7] = [
        (impression("p"), 5),
        (click("p"), 4),
        (add_to_cart("p"), 3),
        (Action::Like, 6),
        (Action::Comment, 2),
        (Action::Share, 1),
        (Action::Follow, 7),
    ];
    for (action, times) in sends {
        for _ in 0..times {
            assert_eq!(f.send("v", 1, action.clone()), Outcome::Counted);
        }
    }
    let r = f.rollup();
    assert_eq!(
        (
            r.impressions,
            r.clicks,
            r.add_to_carts,
            r.likes,
            r.comments,
            r.shares,
            r.follows
        ),
        (5, 4, 3, 6, 2, 1, 7)
    );
    assert_eq!(
        (r.views, r.orders, r.items_sold, r.gmv, r.refunds),
        (0, 0, 0, 0, 0)
    );
}

// --- sales ----------------------------------------------------------------

#[test]
fn orders_are_distinct_order_ids_and_lines_add_up() {
    let mut f = Feed::new();
    // Order o1 holds two lines, o2 one.
    let _ = f.send("a", 1, purchase("p1", "o1", 2, 1999));
    let _ = f.send("a", 2, purchase("p2", "o1", 1, 500));
    let _ = f.send("b", 3, purchase("p1", "o2", 3, 1999));
    let r = f.rollup();
    assert_eq!(r.orders, 2);
    assert_eq!(r.items_sold, 6);
    assert_eq!(r.gmv, 2 * 1999 + 500 + 3 * 1999);
    assert_eq!(r.currency.as_deref(), Some("USD"));
}

#[test]
fn refunds_net_gmv_and_commission() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, purchase("p", "o1", 2, 5000));
    let _ = f.send("a", 2, refund("p", "o1", 1, 5000));
    let r = f.rollup();
    assert_eq!(r.gmv, 10_000);
    assert_eq!(r.refunds, 5000);
    assert_eq!(r.net_gmv, 5000);
    assert_eq!(r.commission, 500);
    // Refunds touch neither orders nor items sold.
    assert_eq!((r.orders, r.items_sold), (1, 2));
}

#[test]
fn commission_rounds_half_away_from_zero_even_when_negative() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, purchase("p", "o1", 1, 1005));
    assert_eq!(f.rollup().commission, 101, "100.5 rounds up");
    let _ = f.send("a", 2, purchase("p", "o2", 1, 1));
    assert_eq!(f.rollup().commission, 101, "100.6 rounds up");
    let _ = f.send("a", 3, refund("p", "o1", 1, 3017));
    let r = f.rollup();
    assert_eq!(r.net_gmv, -2011);
    assert_eq!(r.commission, -201, "-201.1 rounds to -201");
    let _ = f.send("a", 4, refund("p", "o2", 1, 4));
    assert_eq!(f.rollup().commission, -202, "-201.5 rounds away from zero");
}

#[test]
fn commission_uses_the_configured_rate() {
    let rate = "12.5%".parse().unwrap();
    let mut f = Feed::with(AggregatorConfig {
        commission: rate,
        ..AggregatorConfig::default()
    });
    let _ = f.send("a", 1, purchase("p", "o", 1, 4));
    assert_eq!(f.rollup().commission, 1, "0.5 rounds up");
    assert_eq!(f.agg.config().commission, rate);
}

#[test]
fn a_refund_alone_sets_the_currency_and_a_negative_net() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, refund("p", "o", 1, 995));
    let r = f.rollup();
    assert_eq!(r.currency.as_deref(), Some("USD"));
    assert_eq!(
        (r.gmv, r.refunds, r.net_gmv, r.commission),
        (0, 995, -995, -100)
    );
    assert_eq!(
        f.products(),
        vec![],
        "refunds are not attributed to products"
    );
}

#[test]
fn unique_buyers_are_distinct_purchasing_viewers() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, purchase("p", "o1", 1, 100));
    let _ = f.send("a", 2, purchase("p", "o2", 1, 100));
    let _ = f.send("b", 3, purchase("p", "o3", 1, 100));
    let _ = f.send("c", 4, refund("p", "o3", 1, 100));
    let _ = f.send("d", 5, add_to_cart("p"));
    assert_eq!(f.rollup().unique_buyers, 2);
}

// --- ratios ---------------------------------------------------------------

#[test]
fn ratios_are_null_when_their_denominator_is_zero() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, Action::Like);
    let r = f.rollup();
    assert_eq!(
        (
            r.ctr,
            r.click_to_order_rate,
            r.conversion_rate,
            r.gpm,
            r.aov
        ),
        (None, None, None, None, None)
    );
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "ctr",
        "click_to_order_rate",
        "conversion_rate",
        "gpm",
        "aov",
    ] {
        assert!(json[key].is_null(), "{key}");
    }
}

#[test]
fn ratios_divide_their_figures() {
    let mut f = Feed::new();
    for (i, viewer) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let _ = f.send(viewer, i as i64, Action::View);
        let _ = f.send(viewer, i as i64, impression("p"));
        let _ = f.send(viewer, i as i64, impression("p"));
    }
    let _ = f.send("a", 10, click("p"));
    let _ = f.send("b", 10, click("p"));
    let _ = f.send("c", 10, click("p"));
    let _ = f.send("a", 11, purchase("p", "o1", 1, 1000));
    let r = f.rollup();
    assert_eq!(r.ctr, Some(3.0 / 8.0));
    assert_eq!(r.click_to_order_rate, Some(1.0 / 3.0));
    assert_eq!(r.conversion_rate, Some(1.0 / 4.0));
    assert_eq!(r.gpm, Some(250_000), "1000 × 1000 / 4 views");
    assert_eq!(r.aov, Some(1000));
}

#[test]
fn gpm_and_aov_round_half_away_from_zero() {
    let mut f = Feed::new();
    for viewer in ["a", "b", "c"] {
        let _ = f.send(viewer, 1, Action::View);
    }
    // gmv 1: gpm = 1000/3 = 333.33 → 333; aov = 1/1.
    let _ = f.send("a", 2, purchase("p", "o1", 1, 1));
    assert_eq!((f.rollup().gpm, f.rollup().aov), (Some(333), Some(1)));
    // gmv 2: gpm = 666.67 → 667; two orders: aov = 1.
    let _ = f.send("a", 3, purchase("p", "o2", 1, 1));
    assert_eq!((f.rollup().gpm, f.rollup().aov), (Some(667), Some(1)));
    // gmv 5 over 2 orders (o2 gets a second line): aov 2.5 → 3.
    let _ = f.send("a", 4, purchase("p", "o2", 1, 3));
    assert_eq!(f.rollup().aov, Some(3));
    // gmv 7 over 2 orders: 3.5 → 4; gmv 7000/3 views = 2333.33 → 2333.
    let _ = f.send("a", 5, purchase("q", "o1", 2, 1));
    assert_eq!((f.rollup().gpm, f.rollup().aov), (Some(2333), Some(4)));
    // A gpm tie.
    let mut g = Feed::new();
    let _ = g.send("a", 1, Action::View);
    let _ = g.send("b", 1, Action::View);
    let _ = g.send("a", 1, purchase("p", "o", 1, 1));
    // 1 × 1000 / 2 = 500 exactly; aov 1.
    assert_eq!(g.rollup().gpm, Some(500));
    for viewer in [
        "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p",
    ] {
        let _ = g.send(viewer, 1, Action::View);
    }
    // 16 views: 1000 / 16 = 62.5 → 63.
    assert_eq!(g.rollup().gpm, Some(63));
}

// --- products -------------------------------------------------------------

#[test]
fn per_product_figures_are_exact() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, impression("p1"));
    let _ = f.send("b", 1, impression("p1"));
    let _ = f.send("a", 2, click("p1"));
    let _ = f.send("a", 3, add_to_cart("p1"));
    let _ = f.send("a", 4, purchase("p1", "o1", 2, 300));
    let _ = f.send("a", 4, purchase("p2", "o1", 1, 700));
    let _ = f.send("b", 5, purchase("p1", "o2", 1, 300));
    let _ = f.send("b", 5, purchase("p1", "o2", 1, 300)); // second line, same order and product
    let _ = f.send("c", 6, impression("p3"));
    assert_eq!(
        f.products(),
        vec![
            ProductRollup {
                product_id: "p1".into(),
                impressions: 2,
                clicks: 1,
                add_to_carts: 1,
                orders: 2,
                items_sold: 4,
                gmv: 1200
            },
            ProductRollup {
                product_id: "p2".into(),
                impressions: 0,
                clicks: 0,
                add_to_carts: 0,
                orders: 1,
                items_sold: 1,
                gmv: 700
            },
            ProductRollup {
                product_id: "p3".into(),
                impressions: 1,
                clicks: 0,
                add_to_carts: 0,
                orders: 0,
                items_sold: 0,
                gmv: 0
            },
        ]
    );
}

#[test]
fn products_sort_by_gmv_then_product_id() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, purchase("b", "o1", 1, 100));
    let _ = f.send("a", 1, purchase("a", "o1", 1, 100));
    let _ = f.send("a", 1, purchase("c", "o1", 1, 900));
    let _ = f.send("a", 1, impression("d"));
    let order: Vec<String> = f.products().into_iter().map(|p| p.product_id).collect();
    assert_eq!(order, ["c", "a", "b", "d"]);
}

// --- stream metadata ------------------------------------------------------

#[test]
fn seller_id_is_the_first_non_empty_one() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, Action::View);
    assert_eq!(f.rollup().seller_id, None);
    let mut e = event("x1", "live-1", "a", 2, Action::Like);
    e.seller_id = Some("".into());
    let _ = f.send_event(&e);
    assert_eq!(f.rollup().seller_id, None, "empty is not a seller");
    e.event_id = "x2".into();
    e.seller_id = Some("shop-3".into());
    let _ = f.send_event(&e);
    e.event_id = "x3".into();
    e.seller_id = Some("shop-4".into());
    let _ = f.send_event(&e);
    assert_eq!(f.rollup().seller_id.as_deref(), Some("shop-3"));
}

#[test]
fn first_and_last_event_ts_are_min_and_max_of_counted_events() {
    let mut f = Feed::new();
    let _ = f.send("a", 500, Action::View);
    let _ = f.send("a", 300, Action::Like);
    let _ = f.send("a", 900, Action::Leave);
    let _ = f.send("a", 700, Action::Comment);
    let r = f.rollup();
    assert_eq!((r.first_event_ts, r.last_event_ts), (300, 900));
    // A duplicate or invalid event does not move them.
    let _ = f.send_event(&event("e-0", "live-1", "a", 1, Action::View));
    let _ = f.send("a", 5000, purchase("p", "o", 1, 1));
    let mut eur = line("p", "o", 1, 1);
    eur.currency = EUR;
    let _ = f.send("a", 1, Action::Purchase(eur));
    let r = f.rollup();
    assert_eq!((r.first_event_ts, r.last_event_ts), (300, 5000));
}

#[test]
fn a_rollup_is_cumulative_and_names_its_stream() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, Action::View);
    let r = f.rollup();
    assert_eq!(r.kind, crate::rollup::RollupKind::Cumulative);
    assert_eq!(r.stream_id, "live-1");
    assert_eq!(
        (r.window_start, r.window_end, r.is_final),
        (None, None, false)
    );
    assert_eq!(r.currency, None, "no purchase or refund yet");
}

// --- duplicates and invalid events ----------------------------------------

#[test]
fn the_same_event_id_twice_counts_once() {
    let mut f = Feed::new();
    let e = event("dup", "live-1", "a", 1, purchase("p", "o", 2, 100));
    assert_eq!(f.send_event(&e), Outcome::Counted);
    assert_eq!(f.send_event(&e), Outcome::Duplicate);
    // Same id, other content: still the same event to us.
    let other = event("dup", "live-1", "b", 9, Action::View);
    assert_eq!(f.send_event(&other), Outcome::Duplicate);
    let r = f.rollup();
    assert_eq!(
        (r.items_sold, r.gmv, r.views, r.last_event_ts),
        (2, 200, 0, 1)
    );
}

#[test]
fn the_same_event_id_on_two_streams_counts_twice() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    assert_eq!(
        agg.apply(&event("e", "s1", "a", 1, Action::View), 0),
        Outcome::Counted
    );
    assert_eq!(
        agg.apply(&event("e", "s2", "a", 1, Action::View), 1),
        Outcome::Counted
    );
    assert_eq!(agg.rollup("s1").unwrap().views, 1);
    assert_eq!(agg.rollup("s2").unwrap().views, 1);
    assert_eq!(agg.stream_count(), 2);
}

#[test]
fn a_currency_mismatch_changes_nothing() {
    let mut f = Feed::new();
    let _ = f.send("a", 10, purchase("p", "o1", 1, 100));
    let before = f.rollup();
    let before_products = f.products();
    let before_checkpoint = f.agg.checkpoint("live-1").unwrap().to_bytes().len();
    let mut eur = line("p", "o2", 5, 999);
    eur.currency = EUR;
    let bad = Event {
        seller_id: Some("shop".into()),
        ..event("bad", "live-1", "z", 99_999, Action::Purchase(eur.clone()))
    };
    assert_eq!(
        f.send_event(&bad),
        Outcome::Invalid(InvalidReason::CurrencyMismatch)
    );
    let bad_refund = event("bad2", "live-1", "z", -5, Action::Refund(eur));
    assert_eq!(
        f.send_event(&bad_refund),
        Outcome::Invalid(InvalidReason::CurrencyMismatch)
    );
    assert_eq!(f.rollup(), before);
    assert_eq!(f.products(), before_products);
    assert_eq!(
        f.agg.checkpoint("live-1").unwrap().to_bytes().len(),
        before_checkpoint
    );
    assert_eq!(
        f.agg.checkpoint("live-1").unwrap().applied_through(),
        Some(0)
    );
    // Nothing to publish after a mismatch alone.
    assert_eq!(f.agg.publish().len(), 1);
    let _ = f.send_event(&event(
        "bad3",
        "live-1",
        "z",
        12,
        Action::Refund(line_in(EUR)),
    ));
    assert!(f.agg.publish().is_empty());
    // Not in the duplicate set: the same id in the right currency counts.
    let fixed = event("bad", "live-1", "z", 11, purchase("p", "o2", 1, 100));
    assert_eq!(f.send_event(&fixed), Outcome::Counted);
    assert_eq!(f.rollup().currency.as_deref(), Some("USD"));
}

fn line_in(currency: Currency) -> crate::event::OrderLine<'static> {
    crate::event::OrderLine {
        currency,
        ..line("p", "o", 1, 1)
    }
}

#[test]
fn a_duplicate_in_another_currency_is_still_a_duplicate() {
    let mut f = Feed::new();
    let e = event("x", "live-1", "a", 1, purchase("p", "o", 1, 100));
    let _ = f.send_event(&e);
    let mut eur = line("p", "o", 1, 100);
    eur.currency = Currency(*b"JPY");
    assert_eq!(
        f.send_event(&event("x", "live-1", "a", 1, Action::Purchase(eur))),
        Outcome::Duplicate
    );
}

#[test]
fn non_money_events_ignore_the_currency() {
    let mut f = Feed::new();
    let _ = f.send("a", 1, purchase("p", "o", 1, 100));
    assert_eq!(f.send("a", 2, click("p")), Outcome::Counted);
}

// --- publication, revision, checkpoint -----------------------------------

#[test]
fn publish_returns_dirty_streams_sorted_with_increasing_revisions() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    for (i, stream) in ["s3", "s1", "s2", "s1"].into_iter().enumerate() {
        let _ = agg.apply(
            &event(&format!("e{i}"), stream, "a", 1, purchase("p", "o", 1, 10)),
            i as u64,
        );
    }
    assert_eq!(agg.rollup("s1").unwrap().revision, 0);
    let first = agg.publish();
    let ids: Vec<&str> = first.iter().map(|p| p.rollup.stream_id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2", "s3"]);
    assert!(first.iter().all(|p| p.rollup.revision == 1));
    assert_eq!(first[0].rollup.gmv, 20);
    assert_eq!(first[0].products.len(), 1);
    let checkpoints = checkpoints_in(agg.checkpoints());
    let ids: Vec<&str> = checkpoints.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["s1", "s2", "s3"],
        "one checkpoint per published stream"
    );
    let s1 = &checkpoints[0].1;
    assert_eq!((s1.revision(), s1.applied_through()), (1, Some(3)));
    assert!(agg.checkpoints().is_empty(), "taken once");
    // Nothing new: nothing published, revision unchanged.
    assert!(agg.publish().is_empty());
    assert_eq!(agg.rollup("s1").unwrap().revision, 1);
    // A duplicate or invalid event does not dirty a stream.
    let _ = agg.apply(&event("e0", "s3", "a", 1, Action::View), 10);
    assert!(agg.publish().is_empty());
    let _ = agg.apply(&event("e9", "s2", "a", 1, Action::View), 11);
    let second = agg.publish();
    assert_eq!(second.len(), 1);
    assert_eq!(
        (
            second[0].rollup.stream_id.as_str(),
            second[0].rollup.revision
        ),
        ("s2", 2)
    );
    assert_eq!(agg.stream_ids(), ["s1", "s2", "s3"]);
    assert_eq!(agg.rollups().len(), 3);
}

#[test]
fn unknown_streams_have_no_figures() {
    let agg = PartitionAggregator::new(AggregatorConfig::default());
    assert!(agg.rollup("nope").is_none());
    assert!(agg.products("nope").is_none());
    assert!(agg.checkpoint("nope").is_none());
    assert_eq!(agg.stream_count(), 0);
}

/// Everything the feed's stream does, for comparing two runs.
fn story() -> Vec<Event<'static>> {
    let mut events = Vec::new();
    let actions = [
        ("a", 1, Action::View),
        ("b", 2, Action::View),
        ("a", 3, impression("p1")),
        ("a", 4, click("p1")),
        ("a", 5, purchase("p1", "o1", 2, 250)),
        ("b", 6, Action::Leave),
        ("c", 7, Action::View),
        ("c", 8, purchase("p2", "o2", 1, 999)),
        ("a", 9, refund("p1", "o1", 1, 250)),
        ("d", 10, Action::View),
        ("a", 11, Action::Leave),
        ("d", 12, purchase("p1", "o3", 1, 250)),
    ];
    for (i, (viewer, ts, action)) in actions.into_iter().enumerate() {
        let mut e = event(&format!("e{i}"), "live-1", viewer, ts, action);
        e.seller_id = Some("shop-1".into());
        events.push(e);
    }
    events
}

#[test]
fn restore_then_continue_matches_never_stopping() {
    let events = story();
    let straight = applied(&events);

    let mut before = PartitionAggregator::new(AggregatorConfig::default());
    for (i, e) in events.iter().enumerate().take(7) {
        let _ = before.apply(e, i as u64);
    }
    let _ = before.publish();
    let mut checkpoints = checkpoints_in(before.checkpoints());
    let mut after = PartitionAggregator::new(AggregatorConfig::default());
    after.restore("live-1", checkpoints.remove(0).1);
    assert!(after.publish().is_empty(), "a restored stream is not dirty");
    assert_eq!(after.rollup("live-1"), before.rollup("live-1"));
    // The consumer resumes from an older committed offset: 4..7 are replayed.
    for (i, e) in events.iter().enumerate().skip(4) {
        let outcome = after.apply(e, i as u64);
        assert_eq!(
            outcome,
            if i < 7 {
                Outcome::AlreadyApplied
            } else {
                Outcome::Counted
            },
            "event {i}"
        );
    }
    let mut expected = straight.rollup("live-1").unwrap();
    expected.revision = 1;
    assert_eq!(after.rollup("live-1").unwrap(), expected);
    assert_eq!(after.products("live-1"), straight.products("live-1"));
    // Revisions keep increasing across the restart.
    assert_eq!(after.publish()[0].rollup.revision, 2);
}

#[test]
fn an_invalid_event_read_again_after_a_restore_is_invalid_again() {
    // Its dead letter must not depend on being acknowledged before the
    // checkpoint that covers it: read again, it is reported again.
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&event("e1", "s1", "a", 1, purchase("p", "o1", 1, 100)), 1);
    let mut jpy = line("p", "o2", 1, 100);
    jpy.currency = Currency(*b"JPY");
    let wrong = event("e2", "s1", "a", 2, Action::Purchase(jpy));
    assert_eq!(
        agg.apply(&wrong, 2),
        Outcome::Invalid(InvalidReason::CurrencyMismatch)
    );
    let _ = agg.apply(&event("e3", "s1", "a", 3, Action::View), 3);
    let mut fresh = PartitionAggregator::new(AggregatorConfig::default());
    fresh.restore("s1", agg.checkpoint("s1").unwrap());
    assert_eq!(
        fresh.apply(&wrong, 2),
        Outcome::Invalid(InvalidReason::CurrencyMismatch)
    );
    // The valid events around it were applied and stay so.
    assert_eq!(
        fresh.apply(&event("e1", "s1", "a", 1, purchase("p", "o1", 1, 100)), 1),
        Outcome::AlreadyApplied
    );
    assert_eq!(fresh.rollup("s1"), agg.rollup("s1"));
}

#[test]
fn already_applied_is_judged_per_stream() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&event("e1", "s1", "a", 1, Action::View), 5);
    let checkpoint = agg.checkpoint("s1").unwrap();
    let mut fresh = PartitionAggregator::new(AggregatorConfig::default());
    fresh.restore("s1", checkpoint);
    assert_eq!(
        fresh.apply(&event("e1", "s1", "a", 1, Action::View), 5),
        Outcome::AlreadyApplied
    );
    assert_eq!(
        fresh.apply(&event("e0", "s1", "a", 1, Action::Like), 3),
        Outcome::AlreadyApplied
    );
    // Another stream at a lower position is new.
    assert_eq!(
        fresh.apply(&event("e2", "s2", "a", 1, Action::View), 4),
        Outcome::Counted
    );
    // Past the checkpoint, duplicates are still caught by the restored set.
    assert_eq!(
        fresh.apply(&event("e1", "s1", "a", 1, Action::View), 6),
        Outcome::Duplicate
    );
    assert_eq!(fresh.rollup("s1").unwrap().views, 1);
}

#[test]
fn without_a_restore_positions_need_not_increase() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    assert_eq!(
        agg.apply(&event("e1", "s", "a", 1, Action::View), 0),
        Outcome::Counted
    );
    assert_eq!(
        agg.apply(&event("e2", "s", "a", 1, Action::Like), 0),
        Outcome::Counted
    );
    assert_eq!(agg.checkpoint("s").unwrap().applied_through(), Some(0));
}

#[test]
fn a_duplicate_advances_applied_through() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let e = event("e1", "s", "a", 1, Action::View);
    let _ = agg.apply(&e, 1);
    assert_eq!(agg.apply(&e, 2), Outcome::Duplicate);
    assert_eq!(agg.checkpoint("s").unwrap().applied_through(), Some(2));
}

#[test]
fn restore_replaces_a_held_stream_and_clears_its_dirt() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&event("e1", "s", "a", 1, Action::View), 1);
    let old = agg.checkpoint("s").unwrap();
    let _ = agg.apply(&event("e2", "s", "b", 1, Action::View), 2);
    agg.restore("s", old);
    assert_eq!(agg.rollup("s").unwrap().views, 1);
    assert!(agg.publish().is_empty());
    // Dirty again after the restore: published once, not twice.
    let _ = agg.apply(&event("e3", "s", "c", 1, Action::View), 3);
    assert_eq!(agg.publish().len(), 1);
}

#[test]
fn checkpoint_bytes_refuse_bad_input() {
    let mut f = Feed::new();
    for e in story() {
        let _ = f.send_event(&e);
    }
    let bytes = f.agg.checkpoint("live-1").unwrap().to_bytes();
    assert!(matches!(
        StreamCheckpoint::from_bytes(&[]),
        Err(CheckpointError::Empty)
    ));
    let mut wrong_format = bytes.clone();
    wrong_format[0] = 99;
    assert!(matches!(
        StreamCheckpoint::from_bytes(&wrong_format),
        Err(CheckpointError::UnsupportedFormat(99))
    ));
    assert!(matches!(
        StreamCheckpoint::from_bytes(&bytes[..bytes.len() / 2]),
        Err(CheckpointError::Corrupt(_))
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        StreamCheckpoint::from_bytes(&trailing),
        Err(CheckpointError::TrailingBytes(1))
    ));
    let back = StreamCheckpoint::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes().len(), bytes.len());
    assert!(format!("{back:?}").contains("revision"));
}

/// The story, then events a minute and two later: windows, settled and
/// pending presence, three products.
fn format_3_events() -> Vec<Event<'static>> {
    let mut events = story();
    let later = [
        ("e", 61_000, Action::View),
        ("a", 62_000, purchase("p3", "o4", 3, 1_000)),
        ("e", 130_000, Action::Leave),
        ("f", 131_000, Action::Like),
    ];
    for (i, (viewer, ts, action)) in later.into_iter().enumerate() {
        events.push(event(&format!("late{i}"), "live-1", viewer, ts, action));
    }
    events
}

/// The checkpoint of `format_3_events` as written by format 3 (commit
/// `1709ff8`, before windows were sealed), in hex.
const FORMAT_3_CHECKPOINT: &[&str] = &[
    "030503010100040101000000079a4af40302f0fe0f002030c7b6ce20310408cf98106f3e85ce3b0032fb86d7",
    "dd619e8e896eddddb7d5e70028caa7c7c97402f8453f84d8441c0b5a571bf8b9469a21408c784aec3b5e2ee7",
    "e51f4e961eb632c6e60018caa7c7c97402f8451bf8b9469a21408c1f4e961eb632c6e6020201555344010673",
    "686f702d3101010f44caa7c7c97402f8450a00000000000000013f84d8441c0b5a570600000000000000001b",
    "f8b9469a21408c0700000000000000011f4e961eb632c6e60b00000000000000003248ee0000000000000007",
    "00000000000000784aec3b5e2ee7e5d0fb010000000000010800000000000000784aec3b5e2ee7e503010080",
    "0175b39f6f46a64610050186cdfe188f144db2080f01066618efea503b02247e1f77f98a603d5a512e346ad1",
    "fe7fd5b749150b352e71ad805ad60e8d1a88b7af675468563d48540c6f5eefbdec7e1c857c85eb331e31a27e",
    "82b4973ad4fb5866919bba8cf5f07e10a62b0e930b3dcd94bba07203fd72379fc55e5456aba6c6eae0030270",
    "3101010003dc0b1030c7b6ce20310408cf98106f3e85ce3b02703200000001ce0f088e896eddddb7d5e70270",
    "3300000003f02e080032fb86d7dd619e0300040201010003010000000004aa1bf4030218001830c7b6ce2031",
    "0408cf98106f3e85ce3b8e896eddddb7d5e70020caa7c7c97402f8453f84d8441c0b5a571bf8b9469a21408c",
    "1f4e961eb632c6e60018caa7c7c97402f8451bf8b9469a21408c1f4e961eb632c6e6000001c0a90701000000",
    "0001000000000003f02e0090b907e0c80700080032fb86d7dd619e0008784aec3b5e2ee7e500081f4e961eb6",
    "32c6e600000180d30e0001000000000001000000000000a0ef0ff0fe0f00000000000002020100",
];

#[test]
fn a_checkpoint_written_in_format_3_still_restores() {
    let hex: String = FORMAT_3_CHECKPOINT.concat();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes[0], 3);
    let mut fed = applied(&format_3_events());
    let _ = fed.publish();
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    restored.restore("live-1", StreamCheckpoint::from_bytes(&bytes).unwrap());
    assert_eq!(restored.rollup("live-1"), fed.rollup("live-1"));
    assert_eq!(restored.products("live-1"), fed.products("live-1"));
    // Format 3 held each window's presence as counted then, by arrival
    // (nothing had settled: 0). The windows before the newest keep it, as
    // published; the newest is played forward from the presence restored.
    let mut windows = restored.windows("live-1").unwrap();
    let presence: Vec<(u64, u64)> = windows
        .iter()
        .map(|w| (w.concurrent_viewers, w.peak_concurrent_viewers))
        .collect();
    assert_eq!(presence, [(0, 0), (0, 0), (2, 3)]);
    let mut expected = fed.windows("live-1").unwrap();
    for w in windows.iter_mut().chain(&mut expected) {
        (w.concurrent_viewers, w.peak_concurrent_viewers) = (0, 0);
    }
    assert_eq!(windows, expected);
    // Written again in the current format, it reads back the same.
    let written = restored.checkpoint("live-1").unwrap().to_bytes();
    assert_eq!(written[0], 14, "written in the current format");
    let mut again = PartitionAggregator::new(AggregatorConfig::default());
    again.restore("live-1", StreamCheckpoint::from_bytes(&written).unwrap());
    assert_eq!(again.windows("live-1"), restored.windows("live-1"));
    assert_eq!(again.rollup("live-1"), restored.rollup("live-1"));
}

#[test]
fn a_closed_window_is_sealed_into_fewer_bytes_and_reads_the_same() {
    let mut agg = applied(&story());
    let _ = agg.publish();
    let open = agg.state_bytes().windows;
    let before = agg.windows("live-1").unwrap();
    // The watermark passes the end of the story's window: it closes.
    agg.advance_watermark(60_000);
    let _ = agg.apply(&event("x", "live-1", "z", 59_000, Action::Like), 100);
    let _ = agg.publish();
    let sealed = agg.state_bytes().windows;
    assert!(sealed < open - 100, "sealed {sealed} B, open {open} B");
    let after = agg.windows("live-1").unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].likes, before[0].likes + 1);
    assert_eq!(
        (
            after[0].gmv,
            after[0].orders,
            after[0].unique_viewers,
            after[0].views
        ),
        (
            before[0].gmv,
            before[0].orders,
            before[0].unique_viewers,
            before[0].views
        )
    );
    // A late event reopens it, and a checkpoint restores it exactly.
    let _ = agg.apply(&purchase_event("y", 59_500), 101);
    let published = agg.publish();
    assert_eq!(published[0].windows[0].gmv, before[0].gmv + 700);
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    restored.restore("live-1", agg.checkpoint("live-1").unwrap());
    assert_eq!(restored.windows("live-1"), agg.windows("live-1"));
}

fn purchase_event(id: &str, ts: i64) -> Event<'static> {
    event(
        id,
        "live-1",
        "late-buyer",
        ts,
        purchase("p9", "o-late", 1, 700),
    )
}

#[test]
fn an_ended_stream_keeps_its_products_in_the_state_size() {
    let mut agg = applied(&story());
    let idle = agg.config().idle_timeout_ms;
    let _ = agg.publish();
    let live = agg.state_bytes();
    agg.advance_watermark(idle + 3_600_000 + 120_000);
    let published = agg.publish();
    assert!(published[0].rollup.is_final);
    let ended = agg.state_bytes();
    assert_eq!(
        (ended.windows, ended.presence, ended.duplicate_filter),
        (0, 0, 0)
    );
    assert!(ended.products > 0 && ended.products <= live.products);
    assert_eq!(agg.products("live-1"), Some(published[0].products.clone()));
}

#[test]
fn state_size_grows_with_state() {
    let mut f = Feed::new();
    let empty = f.agg.state_bytes_estimate();
    for i in 0..100 {
        let _ = f.send(&format!("v{i}"), i, Action::View);
    }
    assert!(f.agg.state_bytes_estimate() > empty + 100 * 16);
    assert!(format!("{:?}", f.agg).contains("streams: 1"));
}

#[test]
fn a_large_stream_round_trips_through_its_checkpoint() {
    // Past the compact sets' sorted phase: hundreds of viewers, event ids,
    // presence records and one product's orders, all in hash tables.
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let mut events = Vec::new();
    for v in 0..400_i64 {
        let viewer = format!("u{v}");
        events.push(event(
            &format!("v{v}"),
            "big",
            &viewer,
            1_000 + v,
            Action::View,
        ));
        let order = format!("o{v}");
        let line = purchase("p1", &order, 1, 100);
        events.push(event(&format!("b{v}"), "big", &viewer, 2_000 + v, line));
        if v % 3 == 0 {
            events.push(event(
                &format!("l{v}"),
                "big",
                &viewer,
                3_000 + v,
                Action::Leave,
            ));
        }
    }
    for (i, e) in events.iter().enumerate() {
        assert_eq!(agg.apply(e, i as u64), Outcome::Counted);
    }
    let _ = agg.publish();
    let mut checkpoints = checkpoints_in(agg.checkpoints());
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    restored.restore("big", checkpoints.remove(0).1);
    assert_eq!(restored.rollup("big"), agg.rollup("big"));
    assert_eq!(restored.products("big"), agg.products("big"));
    assert_eq!(restored.windows("big"), agg.windows("big"));
    let rollup = restored.rollup("big").unwrap();
    assert_eq!(
        (
            rollup.unique_viewers,
            rollup.orders,
            rollup.concurrent_viewers
        ),
        (400, 400, 266)
    );
    // Every event id is remembered: re-sent past the checkpoint, each is a duplicate.
    let next = events.len() as u64;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(restored.apply(e, next + i as u64), Outcome::Duplicate);
    }
}

#[test]
fn checkpoints_cover_every_publication_since_the_last_ones() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&event("e1", "s1", "a", 1, Action::View), 0);
    let _ = agg.publish();
    let _ = agg.apply(&event("e2", "s2", "a", 1, Action::View), 1);
    let _ = agg.publish();
    let _ = agg.apply(&event("e3", "s1", "b", 2, Action::View), 2);
    let _ = agg.publish();
    // Three publications, two streams: one checkpoint each, at their latest.
    let checkpoints = checkpoints_in(agg.checkpoints());
    let read: Vec<(&str, u64, Option<u64>)> = checkpoints
        .iter()
        .map(|(id, c)| (id.as_str(), c.revision(), c.applied_through()))
        .collect();
    assert_eq!(read, [("s1", 2, Some(2)), ("s2", 1, Some(1))]);
    // Applied but not yet published: not in a checkpoint yet.
    let _ = agg.apply(&event("e4", "s2", "c", 3, Action::View), 3);
    assert!(agg.checkpoints().is_empty());
    // Between full checkpoints, only streams never checkpointed get one.
    let _ = agg.apply(&event("e5", "s3", "d", 4, Action::View), 4);
    let _ = agg.publish();
    assert_eq!(head_ids(&agg.first_checkpoints()), ["s3"]);
    assert_eq!(
        head_ids(&agg.checkpoints()),
        ["s2"],
        "s2 stays due for the next full checkpoint"
    );
}

#[test]
fn skipped_revisions_keep_revisions_increasing_after_a_restore() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let _ = agg.apply(&event("e1", "s1", "a", 1_000, Action::View), 0);
    let _ = agg.publish();
    let mut changelog = Changelog::default();
    changelog.write(agg.checkpoints());
    // Two more publications follow the checkpoint, then the process dies.
    for (i, at) in [(1, 2_000), (2, 3_000)] {
        let _ = agg.apply(
            &event(&format!("e{}", i + 1), "s1", "a", at, Action::Like),
            i,
        );
        let published = agg.publish();
        assert_eq!(published[0].rollup.revision, i + 1);
        assert_eq!(published[0].windows[0].revision, i + 1);
    }
    // A window opened after the checkpoint, published twice before the crash.
    for (i, at) in [(3, 61_000), (4, 62_000)] {
        let _ = agg.apply(
            &event(&format!("e{}", i + 1), "s1", "a", at, Action::Like),
            i,
        );
        let published = agg.publish();
        assert_eq!(published[0].windows[0].window_start, Some(60_000));
        assert_eq!(published[0].windows[0].revision, i - 2);
    }
    let mut restored = changelog.restore(AggregatorConfig::default());
    restored.skip_revisions(5);
    let _ = restored.apply(&event("e2", "s1", "a", 2_000, Action::Like), 1);
    let published = restored.publish();
    assert_eq!(published[0].rollup.revision, 7, "past every revision seen");
    assert_eq!(published[0].windows[0].revision, 7);
    // The moved revisions go to the changelog with that first publication,
    // even between full checkpoints.
    let first = restored.first_checkpoints();
    assert_eq!(head_ids(&first), ["s1"]);
    changelog.write(first);
    assert_eq!(changelog.checkpoints()[0].1.revision(), 7);
    // The replay opens the later window again: from the stream's revision,
    // past its two revisions of before.
    let _ = restored.apply(&event("e4", "s1", "a", 61_000, Action::Like), 3);
    let published = restored.publish();
    assert_eq!(published[0].windows[0].window_start, Some(60_000));
    assert_eq!(published[0].windows[0].revision, 8);
    assert_eq!(published[0].rollup.revision, 8);
}

#[test]
fn concurrent_viewers_over_many_pending_presence_events_follow_each_viewers_latest() {
    // 300 views and leaves of 60 viewers, out of order, all within the allowed
    // lateness: none settles, so the figure comes from playing them all.
    let mut f = Feed::new();
    let mut latest: std::collections::HashMap<String, (i64, bool)> = Default::default();
    let mut x: u64 = 7;
    for _ in 0..300 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let viewer = format!("v{}", (x >> 33) % 60);
        let ts = 1_000 + ((x >> 20) % 4_000) as i64;
        let is_view = !(x >> 11).is_multiple_of(3);
        let action = if is_view { Action::View } else { Action::Leave };
        let _ = f.send(&viewer, ts, action);
        let entry = latest.entry(viewer).or_insert((ts, is_view));
        // The later event wins; at the same time, a leave wins.
        if ts > entry.0 || (ts == entry.0 && !is_view) {
            *entry = (ts, is_view);
        }
    }
    let present = latest.values().filter(|(_, view)| *view).count() as u64;
    assert_eq!(f.rollup().concurrent_viewers, present);
}

#[test]
fn a_busy_streams_duplicate_filter_reaches_the_changelog_once_per_id_and_restores_exactly() {
    // 1,200 events of one stream over three minutes with a one-minute
    // duplicate horizon: generations of 400 ids, checkpointed every 100
    // events, so each is written as a whole first piece and then appended to.
    let config = AggregatorConfig {
        dedup_horizon_ms: 60_000,
        ..AggregatorConfig::default()
    };
    let events: Vec<Event<'static>> = (0..1_200)
        .map(|i| {
            let viewer = format!("v{}", i % 50);
            event(&format!("e{i}"), "busy", &viewer, i * 150, Action::Like)
        })
        .collect();
    let mut agg = PartitionAggregator::new(config.clone());
    let mut changelog = Changelog::default();
    let mut piece_bytes = 0;
    let mut head_bytes = Vec::new();
    for (position, e) in (0..).zip(&events) {
        assert_eq!(agg.apply(e, position), Outcome::Counted);
        if position % 100 == 99 {
            let _ = agg.publish();
            let records = agg.checkpoints();
            for r in &records {
                match Key::parse(&r.key) {
                    Some(Key::Piece { .. }) => piece_bytes += r.value.len(),
                    _ => head_bytes.push(r.value.len()),
                }
            }
            changelog.write(records);
        }
    }
    assert_eq!(piece_bytes, 8 * events.len(), "every id written once");
    assert!(
        head_bytes.iter().all(|&b| b < 8 * 100),
        "heads hold no ids: {head_bytes:?}"
    );
    let restored = crate::changelog::restore(&changelog.0).unwrap();
    assert_eq!(
        restored.stray_pieces, 0,
        "the first generation's tombstoned"
    );
    let mut after = changelog.restore(config);
    assert_eq!(after.rollup("busy"), agg.rollup("busy"));
    // Sent again: within the horizon a duplicate, before it counted again,
    // the same in the restored state as in the one never stopped.
    let mut duplicates = 0;
    for (position, e) in (1_200..).zip(&events) {
        let outcome = after.apply(e, position);
        assert_eq!(outcome, agg.apply(e, position), "event {position}");
        duplicates += u64::from(outcome == Outcome::Duplicate);
    }
    assert_eq!(
        duplicates, 800,
        "the two generations still within the horizon"
    );
}

#[test]
fn a_changelog_head_written_by_the_previous_versions_still_restores() {
    // Settled presence, so that the head has a presence piece as well as
    // the duplicate filter's.
    let mut fed = applied_unseeded(&story());
    let _ = fed.publish();
    let mut changelog = Changelog::default();
    changelog.write(fed.checkpoints());
    let _ = fed.apply(&event("e-late", "live-1", "e", 20_000, Action::View), 100);
    let _ = fed.publish();
    changelog.write(fed.checkpoints());
    let head = changelog.0[&b"live-1".to_vec()].clone();
    assert_eq!(head[0], 15);
    assert_eq!(changelog.0.len(), 3, "the head and two pieces");
    // Format 13, before ids were seeded; format 12, before the windows had
    // a piece of their own; format 10, before the head counted presence
    // history pieces; format 8, before windows kept when they were at their
    // peak; format 6, before the head said where presence reached the
    // windows.
    let unseeded = crate::stream::in_older_format(&head);
    assert_eq!(unseeded[0], 13);
    let windowed = crate::stream::in_older_format(&unseeded);
    let historyless = crate::stream::in_older_format(&windowed);
    let spanless = crate::stream::in_older_format(&historyless);
    let unreached = crate::stream::in_older_format(&spanless);
    assert_eq!(
        (windowed[0], historyless[0], spanless[0], unreached[0]),
        (12, 10, 8, 6)
    );
    for older in [unseeded, windowed, historyless, spanless, unreached] {
        let mut old = Changelog(changelog.0.clone());
        old.0.insert(b"live-1".to_vec(), older);
        let restored = old.restore(AggregatorConfig::default());
        assert_eq!(restored.rollup("live-1"), fed.rollup("live-1"));
        assert_eq!(restored.windows("live-1"), fed.windows("live-1"));
    }
}

#[test]
fn a_changelog_written_by_the_previous_version_still_restores() {
    // Format 7 (written before windows kept when they were at their peak)
    // and format 4 (before the filter went to pieces) under the stream's
    // key, the duplicate filter inline.
    let mut fed = applied_unseeded(&story());
    let _ = fed.publish();
    let mut changelog = Changelog::default();
    let current = fed.checkpoint("live-1").unwrap().to_bytes();
    let unseeded = crate::stream::in_older_format(&current);
    assert_eq!((current[0], unseeded[0]), (14, 11));
    let historyless = crate::stream::in_older_format(&unseeded);
    let spanless = crate::stream::in_older_format(&historyless);
    let old = crate::stream::in_older_format(&spanless);
    assert_eq!((historyless[0], spanless[0], old[0]), (9, 7, 4));
    for bytes in [&unseeded, &historyless, &spanless, &old] {
        let mut changelog = Changelog::default();
        changelog.0.insert(b"live-1".to_vec(), bytes.clone());
        let restored = changelog.restore(AggregatorConfig::default());
        assert_eq!(restored.rollup("live-1"), fed.rollup("live-1"));
        assert_eq!(restored.windows("live-1"), fed.windows("live-1"));
    }
    changelog.0.insert(b"live-1".to_vec(), old);
    let mut restored = changelog.restore(AggregatorConfig::default());
    let resent = &story()[0];
    assert_eq!(restored.apply(resent, 1_000), Outcome::Duplicate);
    // Its next checkpoint writes the filter as a piece and a head.
    let _ = restored.apply(&event("new", "live-1", "z", 2_000, Action::Like), 1_001);
    let _ = restored.publish();
    let records = restored.checkpoints();
    let kinds: Vec<Option<PieceKind>> = records
        .iter()
        .map(|r| match Key::parse(&r.key) {
            Some(Key::Piece { kind, .. }) => Some(kind),
            _ => None,
        })
        .collect();
    // (Its viewers' presence events still wait for the watermark: no
    // presence is settled yet, so there is no presence piece.)
    assert_eq!(
        kinds,
        [Some(PieceKind::Seen), None],
        "a piece, then the head"
    );
    assert_eq!(records[1].value[0], 15);
    assert!(matches!(
        StreamCheckpoint::from_bytes(&records[1].value),
        Err(CheckpointError::NeedsPieces)
    ));
}

#[test]
fn an_ended_stream_leaves_no_duplicate_filter_pieces_in_the_changelog() {
    let mut agg = applied(&story());
    let mut changelog = Changelog::default();
    let _ = agg.publish();
    changelog.write(agg.checkpoints());
    let pieces = |changelog: &Changelog| {
        changelog
            .0
            .keys()
            .filter(|key| matches!(Key::parse(key), Some(Key::Piece { .. })))
            .count()
    };
    assert_eq!(pieces(&changelog), 1);
    // Idle past the timeout: it ends, its filter is released, and the
    // checkpoint of its final publication tombstones the piece.
    agg.advance_watermark(AggregatorConfig::default().idle_timeout_ms + 60_000);
    let published = agg.publish();
    assert!(published[0].rollup.is_final);
    changelog.write(agg.checkpoints());
    assert_eq!(pieces(&changelog), 0);
    let restored = changelog.restore(AggregatorConfig::default());
    assert_eq!(restored.rollup("live-1"), agg.rollup("live-1"));
}

#[test]
fn presence_goes_to_the_changelog_as_a_log_of_changes_and_restores_exactly() {
    // 400 viewers come and go over ten minutes, the watermark settling
    // their presence as it goes; a checkpoint every 50 events. Presence is
    // written as the records that changed, rewritten whole in a new epoch
    // once the log outgrows the map, and absent viewers are forgotten.
    let config = AggregatorConfig {
        window_retention_ms: 60_000,
        ..AggregatorConfig::default()
    };
    let mut events = Vec::new();
    for i in 0..3_000i64 {
        let viewer = format!("v{}", (i * 7) % 400);
        let action = if i % 3 == 2 {
            Action::Leave
        } else {
            Action::View
        };
        events.push(event(&format!("e{i}"), "busy", &viewer, i * 200, action));
    }
    let mut agg = PartitionAggregator::new(config.clone());
    let mut changelog = Changelog::default();
    let (mut presence_bytes, mut epochs, mut tombstones) = (0, HashSet::new(), 0);
    for (position, e) in (0..).zip(&events) {
        let _ = agg.apply(e, position);
        if position % 50 == 49 {
            let _ = agg.publish();
            let records = agg.checkpoints();
            for r in &records {
                if let Some(Key::Piece {
                    kind: PieceKind::Presence,
                    number,
                    ..
                }) = Key::parse(&r.key)
                {
                    presence_bytes += r.value.len();
                    epochs.insert(number);
                    tombstones += usize::from(r.value.is_empty());
                }
            }
            changelog.write(records);
            // Restored at any checkpoint, the state is the same: its
            // figures, and its summary (viewers kept, ids, windows).
            let restored = changelog.restore(config.clone());
            assert_eq!(restored.rollup("busy"), agg.rollup("busy"), "at {position}");
            assert_eq!(
                format!("{:?}", restored.checkpoint("busy")),
                format!("{:?}", agg.checkpoint("busy")),
                "at {position}"
            );
        }
    }
    assert!(epochs.len() > 1, "the log was rewritten: {epochs:?}");
    assert!(tombstones > 0, "old epochs are tombstoned");
    let whole_each_time = 60 * 400 * 17;
    assert!(
        presence_bytes < whole_each_time / 3,
        "{presence_bytes} B of presence pieces"
    );
    let later = event("late", "busy", "v1", 600_000, Action::Leave);
    let _ = goes_on_alike(&changelog, config, &mut agg, &events[2_500..], later);
}

/// Checks that `changelog` holds no piece its heads do not count, restores
/// it, and feeds the restored aggregator and `agg` (the one that wrote it)
/// `again` read again (last first) and then `later`: the "busy" stream's
/// figures agree. Returns the restored aggregator.
fn goes_on_alike(
    changelog: &Changelog,
    config: AggregatorConfig,
    agg: &mut PartitionAggregator,
    again: &[Event<'_>],
    later: Event<'_>,
) -> PartitionAggregator {
    assert_eq!(
        crate::changelog::restore(&changelog.0)
            .unwrap()
            .stray_pieces,
        0
    );
    let mut after = changelog.restore(config);
    for (position, e) in (1_000_000..).zip(again.iter().rev()) {
        let _ = after.apply(e, position);
        let _ = agg.apply(e, position);
    }
    let _ = after.apply(&later, 2_000_000);
    let _ = agg.apply(&later, 2_000_000);
    assert_eq!(after.rollup("busy"), agg.rollup("busy"));
    after
}

#[test]
fn windows_go_to_the_changelog_as_a_piece_the_heads_add_to_and_restore_exactly() {
    // Forty minutes of a stream, ten retained: views, leaves and purchases
    // every two seconds, and now and then one five minutes late (a window
    // closed long ago changes). A checkpoint every 30 s of event time.
    // Restored at any checkpoint, the state is the same.
    let config = AggregatorConfig {
        window_retention_ms: 600_000,
        ..AggregatorConfig::default()
    };
    let mut events = Vec::new();
    for i in 0..1_200i64 {
        let viewer = format!("v{}", (i * 7) % 60);
        let action = match i % 4 {
            0 | 1 => Action::View,
            2 => Action::Leave,
            _ => purchase("p1", &format!("o{i}"), 1, 1_000 + i),
        };
        let ts = if i % 45 == 44 {
            i * 2_000 - 300_000
        } else {
            i * 2_000
        };
        events.push(event(&format!("e{i}"), "busy", &viewer, ts, action));
    }
    let mut agg = PartitionAggregator::new(config.clone());
    let mut changelog = Changelog::default();
    let (mut bases, mut epochs, mut tombstones) = (0, HashSet::new(), 0);
    let (mut checkpoints, mut most_retained) = (0, 0);
    let (mut windows_in_heads, mut windows_retained) = (0, 0);
    for (position, e) in (0..).zip(&events) {
        // Published, then an event counts before the checkpoint: the head
        // holds what changed since the publication too.
        if position % 15 == 14 {
            let _ = agg.publish();
        }
        let _ = agg.apply(e, position);
        if position % 15 != 14 {
            continue;
        }
        let records = agg.checkpoints();
        checkpoints += 1;
        for r in &records {
            if let Some(Key::Piece {
                kind: PieceKind::Windows,
                number,
                ..
            }) = Key::parse(&r.key)
            {
                bases += usize::from(!r.value.is_empty());
                tombstones += usize::from(r.value.is_empty());
                epochs.insert(number);
            }
        }
        changelog.write(records);
        let restored = changelog.restore(config.clone());
        assert_eq!(restored.rollup("busy"), agg.rollup("busy"), "at {position}");
        assert_eq!(
            restored.windows("busy"),
            agg.windows("busy"),
            "at {position}"
        );
        assert_eq!(
            format!("{:?}", restored.checkpoint("busy")),
            format!("{:?}", agg.checkpoint("busy")),
            "at {position}"
        );
        // The head alone, its windows piece read as holding none: the
        // windows it holds itself.
        let head = &changelog.0[&b"busy".to_vec()];
        let empty = postcard::to_stdvec(&(Vec::<u8>::new(), Vec::<u8>::new())).unwrap();
        let held = StreamCheckpoint::from_changelog(head, |kind, number, piece| match kind {
            PieceKind::Windows => Some(empty.as_slice()),
            _ => changelog
                .0
                .get(&piece_key("busy", kind, number, piece))
                .map(Vec::as_slice),
        })
        .unwrap();
        let in_head: usize = format!("{held:?}")
            .split("windows: ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .expect("the summary counts windows");
        let retained = agg.windows("busy").unwrap().len();
        assert!(
            in_head <= retained,
            "{in_head} windows in the head at {position}"
        );
        (windows_in_heads, windows_retained) =
            (windows_in_heads + in_head, windows_retained + retained);
        most_retained = most_retained.max(retained);
    }
    assert!(most_retained >= 10, "{most_retained}");
    assert!(
        windows_in_heads * 3 < windows_retained,
        "heads held {windows_in_heads} windows of {windows_retained} retained"
    );
    assert!(checkpoints >= 80, "{checkpoints}");
    assert!(
        bases > 3 && bases <= checkpoints / 2,
        "{bases} pieces over {checkpoints} checkpoints"
    );
    assert!(
        epochs.len() > 1 && tombstones > 0,
        "the piece is rewritten, old epochs tombstoned"
    );
    // The restored state goes on exactly as the one never stopped, late
    // events included.
    let late = event("late", "busy", "v1", 2_000_000, Action::Like);
    let after = goes_on_alike(&changelog, config, &mut agg, &events[900..], late);
    // Revisions aside: the restored state has not published the event
    // counted after the last publication.
    let unrevised = |agg: &PartitionAggregator| {
        let mut windows = agg.windows("busy").unwrap();
        for window in &mut windows {
            window.revision = 0;
        }
        windows
    };
    assert_eq!(unrevised(&after), unrevised(&agg));
    // A missing windows piece is refused, not restored as fewer windows.
    let mut broken = changelog.0.clone();
    broken.retain(|key, _| {
        !matches!(
            Key::parse(key),
            Some(Key::Piece {
                kind: PieceKind::Windows,
                ..
            })
        )
    });
    let error = crate::changelog::restore(&broken).unwrap_err().to_string();
    assert!(
        error.contains("windows epoch") && error.contains("missing"),
        "{error}"
    );
}

/// The duplicate horizon is the stream's own event time: a stream behind
/// another of its partition (a device clock minutes ahead, within the
/// allowed skew), or a partition whose watermark jumped to the wall clock
/// while its input was quiet, still catches its duplicates seconds after
/// their originals. (Ids are kept one to two horizons, in generations of
/// 10 minutes: `T` starts one.)
#[test]
fn a_streams_duplicates_are_caught_by_its_own_event_time_not_its_partitions() {
    const T: i64 = 1_764_120_000_000;
    const MIN: i64 = 60_000;
    let behind: Vec<Event<'static>> = (0..10)
        .map(|i| {
            event(
                &format!("b{i}"),
                "behind",
                &format!("u{i}"),
                T + i * 1_000,
                Action::View,
            )
        })
        .collect();
    // Another stream of the partition, 21 minutes on.
    let mut f = Feed::new();
    for e in &behind {
        assert_eq!(f.send_event(e), Outcome::Counted);
    }
    let ahead = event("a", "ahead", "z", T + 21 * MIN, Action::Like);
    assert_eq!(f.send_event(&ahead), Outcome::Counted);
    let _ = f.agg.publish();
    for e in &behind {
        assert_eq!(f.send_event(e), Outcome::Duplicate, "{}", e.event_id);
    }
    // A partition whose watermark was pushed 21 minutes on (idle input).
    let mut agg = applied(&behind);
    agg.advance_watermark(T + 21 * MIN);
    let _ = agg.publish();
    for (position, e) in (100..).zip(&behind) {
        assert_eq!(agg.apply(e, position), Outcome::Duplicate, "{}", e.event_id);
    }
    // Twenty minutes of its own event time on, its first ids are
    // forgotten: the filter stays bounded.
    let later = event("c", "behind", "u0", T + 21 * MIN, Action::Like);
    assert_eq!(agg.apply(&later, 200), Outcome::Counted);
    let _ = agg.publish();
    assert_eq!(agg.apply(&behind[0], 201), Outcome::Counted);
}

// --- id seeds ---------------------------------------------------------------

/// Two 32-byte ids that unseeded xxh3 hashes alike (`ids.rs`).
const CRAFTED: [&str; 2] = [
    "_\u{229}$\u{fc4e}\u{2e156}F\u{5c38}a-000000000000000",
    "jz{S15^\u{db}7D1;4hR-000000000000000",
];

/// The crafted pair as two viewers who view, like and each buy an order,
/// the pair again as their event ids.
fn crafted_events() -> Vec<Event<'static>> {
    let mut events = Vec::new();
    for (i, id) in CRAFTED.into_iter().enumerate() {
        events.push(event(
            &format!("view-{i}"),
            "live-1",
            id,
            1_000,
            Action::View,
        ));
        events.push(event(id, "live-1", "fan", 1_001, Action::Like));
        let bought = purchase("p1", id, 1, 500);
        events.push(event(&format!("buy-{i}"), "live-1", id, 1_002, bought));
    }
    events
}

#[test]
fn ids_crafted_to_collide_unseeded_count_apart_under_a_streams_seed() {
    let figures = |agg: &PartitionAggregator| {
        let r = agg.rollup("live-1").unwrap();
        (r.unique_viewers, r.likes, r.orders, r.unique_buyers, r.gmv)
    };
    // Unseeded, as before seeds: one viewer, one like (the other a
    // "duplicate"), one order.
    let unseeded = applied_unseeded(&crafted_events());
    assert_eq!(figures(&unseeded), (1, 1, 1, 1, 1_000));
    // A stream's random seed tells them apart, and stays with it through a
    // checkpoint: a restored stream still knows its events and viewers.
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    for (position, e) in (0..).zip(crafted_events()) {
        assert_eq!(agg.apply(&e, position), Outcome::Counted);
    }
    assert_eq!(figures(&agg), (2, 2, 2, 2, 1_000));
    let mut restored = PartitionAggregator::new(AggregatorConfig::default());
    restored.restore("live-1", agg.checkpoint("live-1").unwrap());
    for (position, e) in (100..).zip(crafted_events()) {
        assert_eq!(restored.apply(&e, position), Outcome::Duplicate);
    }
    let again = event("view-again", "live-1", CRAFTED[1], 2_000, Action::View);
    assert_eq!(restored.apply(&again, 200), Outcome::Counted);
    assert_eq!(figures(&restored), (2, 2, 2, 2, 1_000));
}

#[test]
fn each_new_stream_draws_a_seed_of_its_own() {
    let mut agg = PartitionAggregator::new(AggregatorConfig::default());
    let mut seeds = HashSet::new();
    for s in 0..100 {
        let stream = format!("live-{s}");
        let _ = agg.apply(&event("e", &stream, "v", 1_000, Action::View), s);
        let seed = agg.streams[stream.as_str()].id_seed;
        assert_ne!(seed, 0, "seed 0 is unseeded");
        seeds.insert(seed);
    }
    assert_eq!(seeds.len(), 100);
    // Another aggregator (another process) draws others.
    let mut other = PartitionAggregator::new(AggregatorConfig::default());
    let _ = other.apply(&event("e", "live-0", "v", 1_000, Action::View), 0);
    assert!(!seeds.contains(&other.streams["live-0"].id_seed));
}

#[test]
fn a_stream_new_since_a_restore_starts_past_the_revisions_skipped() {
    let mut agg = applied(&story());
    let _ = agg.publish();
    agg.skip_revisions(10);
    let first = event("n1", "live-new", "v", 1_000, Action::View);
    assert_eq!(agg.apply(&first, 100), Outcome::Counted);
    let publication = agg
        .publish()
        .into_iter()
        .find(|p| p.rollup.stream_id == "live-new")
        .unwrap();
    // Its first rollups may have landed before a crash without its first
    // checkpoint, at revisions from 1: these go past them.
    assert_eq!(publication.rollup.revision, 11);
    assert!(publication.windows.iter().all(|w| w.revision > 10));
    // A new aggregator's streams start from 1.
    let fresh = applied(&[first]);
    assert_eq!(fresh.rollup("live-new").unwrap().revision, 0);
}

//! The live-shopping world behind the traffic: streams, their viewers, and each
//! viewer's funnel through one visit to a live room.
//!
//! Popularity is Zipf-like (s = 1.1), so a few rooms carry most of the traffic.
//! Each room has a seller, a currency and a catalogue, and a bounded set of
//! viewer sessions in progress. A session walks the funnel
//! view → impressions → click → add_to_cart → purchase, with engagement
//! (likes, comments, shares, follows) sprinkled in, and ends with a leave
//! (sometimes followed by a re-entry) or, rarely, by vanishing without one,
//! as a killed app does. Refunds come later, from a per-room backlog.

use livetally_aggregator::{Currency, EventType};

use super::rng::{zipf_weights, Alias, Prob, Rng};

/// Zipf exponent of stream popularity.
const ZIPF_S: f64 = 1.1;
/// Size of the global viewer population (`u-1`..=`u-1000000`).
const VIEWER_POPULATION: u64 = 1_000_000;
/// Concurrent sessions the whole model keeps per stream, on average; the
/// popular rooms get most of them.
const SESSIONS_PER_STREAM: f64 = 40.0;
/// Refunds a room holds back before releasing them regardless of chance.
const REFUND_BACKLOG: usize = 64;
/// Order lines beyond the first: at most this many.
const EXTRA_LINES: u64 = 2;

/// Funnel and engagement probabilities, per draw: the generator's idea of a
/// typical live room (CTR ≈ 8 %, cart ≈ 35 % of clicks, checkout ≈ 45 % of
/// carts, refunds ≈ 3 % of lines), not measured data.
struct Odds {
    /// A room with free capacity gets a new viewer instead of a session step.
    join: Prob,
    /// A clicked card is added to the cart.
    cart: Prob,
    /// A cart is checked out.
    checkout: Prob,
    /// An order has more than one line.
    multi_line: Prob,
    /// A purchased line is later refunded.
    refund: Prob,
    /// A room releases one held-back refund.
    release_refund: Prob,
    /// A leaver comes back later (another `view`).
    reenter: Prob,
    /// An impression is clicked.
    click: Prob,
    /// The impression shows one of the few pinned products (the host's pick).
    pinned: Prob,
    /// The producer sends `seller_id`.
    seller: Prob,
}

const ODDS: Odds = Odds {
    join: Prob::new(0.10),
    cart: Prob::new(0.35),
    checkout: Prob::new(0.45),
    multi_line: Prob::new(0.20),
    refund: Prob::new(0.03),
    release_refund: Prob::new(0.02),
    reenter: Prob::new(0.15),
    click: Prob::new(0.08),
    pinned: Prob::new(0.40),
    seller: Prob::new(0.90),
};

/// What a session does on a step that is not a follow-up, out of 1000.
const STEP_WEIGHTS: [(Step, u64); 7] = [
    (Step::Leave, 100),
    (Step::Vanish, 5),
    (Step::Impression, 550),
    (Step::Like, 220),
    (Step::Comment, 90),
    (Step::Share, 20),
    (Step::Follow, 15),
];
const STEP_TOTAL: u64 = 1000;

#[derive(Clone, Copy, Debug)]
enum Step {
    Leave,
    Vanish,
    Impression,
    Like,
    Comment,
    Share,
    Follow,
}

/// A generated event before the traffic layer gives it an id, a time and a
/// wire format.
#[derive(Clone, Copy, Debug)]
pub(super) struct Draft {
    pub ty: EventType,
    /// Index into [`Model::streams`].
    pub stream: usize,
    pub viewer: u32,
    pub product: u32,
    pub order: u64,
    pub quantity: u32,
    pub unit_price: i64,
}

/// A follow-up a session owes: the next step of its funnel.
#[derive(Clone, Copy, Debug)]
enum FollowUp {
    Click {
        product: u32,
    },
    AddToCart {
        product: u32,
    },
    Purchase {
        product: u32,
        order: u64,
        quantity: u32,
    },
}

/// One viewer's visit to a live room.
#[derive(Clone, Debug)]
struct Session {
    viewer: u32,
    /// Left, and will re-enter with a `view` on its next step.
    away: bool,
    /// Owed follow-ups, oldest first (at most one order's lines).
    follow_ups: [Option<FollowUp>; 1 + EXTRA_LINES as usize],
}

impl Session {
    fn new(viewer: u32) -> Session {
        Session {
            viewer,
            away: false,
            follow_ups: [None; 1 + EXTRA_LINES as usize],
        }
    }

    fn push(&mut self, follow_up: FollowUp) {
        if let Some(slot) = self.follow_ups.iter_mut().find(|s| s.is_none()) {
            *slot = Some(follow_up);
        }
    }

    fn pop(&mut self) -> Option<FollowUp> {
        let first = self.follow_ups[0].take()?;
        self.follow_ups.rotate_left(1);
        Some(first)
    }
}

/// A purchased line that will be refunded.
#[derive(Clone, Copy, Debug)]
struct HeldRefund {
    viewer: u32,
    product: u32,
    order: u64,
    quantity: u32,
}

/// One live room.
#[derive(Clone, Debug)]
pub(super) struct LiveStream {
    /// `live-<number>`.
    pub number: u32,
    /// `shop-<seller>`.
    pub seller: u32,
    /// What the room sells in.
    pub currency: Currency,
    /// Unit price of `sku-<number>-<i + 1>`, minor units.
    prices: Box<[i64]>,
    /// The room's audience: viewers `pool_start..pool_start + pool_len`
    /// (mod the population); rooms overlap, as audiences do.
    pool_start: u64,
    pool_len: u64,
    /// Most sessions in progress at once.
    capacity: usize,
    sessions: Vec<Session>,
    refunds: Vec<HeldRefund>,
}

impl LiveStream {
    /// A viewer of this room's audience.
    fn pick_viewer(&self, rng: &mut Rng) -> u32 {
        ((self.pool_start + rng.below(self.pool_len)) % VIEWER_POPULATION + 1) as u32
    }
}

/// Every live room and how to pick one.
pub(super) struct Model {
    pub streams: Vec<LiveStream>,
    popularity: Alias,
    /// Counter behind order ids.
    orders: u64,
}

impl Model {
    /// `streams` rooms with `products` products each, drawn from `rng`.
    pub(super) fn new(streams: usize, products: usize, rng: &mut Rng) -> Model {
        let streams = streams.max(1);
        let products = products.max(1);
        let weights = zipf_weights(streams, ZIPF_S);
        let total: f64 = weights.iter().sum();
        // Popularity rank is shuffled over stream numbers so that `live-1` is
        // not always the hit.
        let mut ranks: Vec<usize> = (0..streams).collect();
        for i in (1..streams).rev() {
            ranks.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut by_number = vec![0.0; streams];
        let sellers = (streams as u64 * 2 / 3).max(1);
        let streams: Vec<LiveStream> = (0..streams)
            .map(|index| {
                let share = weights[ranks[index]] / total;
                by_number[index] = weights[ranks[index]];
                let currency = pick_currency(rng);
                LiveStream {
                    number: index as u32 + 1,
                    seller: rng.below(sellers) as u32 + 1,
                    currency,
                    prices: (0..products).map(|_| price(currency, rng)).collect(),
                    pool_start: rng.below(VIEWER_POPULATION),
                    pool_len: ((share * VIEWER_POPULATION as f64) as u64)
                        .clamp(200, VIEWER_POPULATION),
                    capacity: ((share * SESSIONS_PER_STREAM * by_number.len() as f64) as usize)
                        .max(4),
                    sessions: Vec::new(),
                    refunds: Vec::new(),
                }
            })
            .collect();
        Model {
            streams,
            popularity: Alias::new(&by_number),
            orders: 0,
        }
    }

    /// The room of the next record, by popularity.
    pub(super) fn pick_stream(&self, rng: &mut Rng) -> usize {
        self.popularity.sample(rng)
    }

    /// A viewer of room `stream`.
    pub(super) fn pick_viewer(&self, stream: usize, rng: &mut Rng) -> u32 {
        self.streams[stream].pick_viewer(rng)
    }

    /// Whether this event carries `seller_id`.
    pub(super) fn sends_seller(rng: &mut Rng) -> bool {
        rng.chance(ODDS.seller)
    }

    /// The next valid event of the world.
    pub(super) fn next(&mut self, rng: &mut Rng) -> Draft {
        let stream = self.pick_stream(rng);
        loop {
            if let Some(draft) = self.step(stream, rng) {
                return draft;
            }
        }
    }

    /// One step of room `stream`; `None` when a session vanished silently.
    fn step(&mut self, stream: usize, rng: &mut Rng) -> Option<Draft> {
        let odds = &ODDS;
        let room = &mut self.streams[stream];
        let draft = |ty, viewer| Draft {
            ty,
            stream,
            viewer,
            product: 0,
            order: 0,
            quantity: 0,
            unit_price: 0,
        };

        if !room.refunds.is_empty()
            && (room.refunds.len() >= REFUND_BACKLOG || rng.chance(odds.release_refund))
        {
            let held = room
                .refunds
                .swap_remove(rng.below(room.refunds.len() as u64) as usize);
            return Some(Draft {
                product: held.product,
                order: held.order,
                quantity: held.quantity,
                unit_price: room.prices[held.product as usize - 1],
                ..draft(EventType::Refund, held.viewer)
            });
        }

        if room.sessions.is_empty()
            || (room.sessions.len() < room.capacity && rng.chance(odds.join))
        {
            let viewer = room.pick_viewer(rng);
            room.sessions.push(Session::new(viewer));
            return Some(draft(EventType::View, viewer));
        }

        let at = rng.below(room.sessions.len() as u64) as usize;
        let session = &mut room.sessions[at];
        let viewer = session.viewer;
        if session.away {
            session.away = false;
            return Some(draft(EventType::View, viewer));
        }

        if let Some(follow_up) = session.pop() {
            return Some(match follow_up {
                FollowUp::Click { product } => {
                    if rng.chance(odds.cart) {
                        session.push(FollowUp::AddToCart { product });
                    }
                    Draft {
                        product,
                        ..draft(EventType::Click, viewer)
                    }
                }
                FollowUp::AddToCart { product } => {
                    if rng.chance(odds.checkout) {
                        self.orders += 1;
                        let order = self.orders;
                        session.push(FollowUp::Purchase {
                            product,
                            order,
                            quantity: quantity(rng),
                        });
                        if rng.chance(odds.multi_line) {
                            // Bundle buys: other products of the room, distinct
                            // from the carted one when the catalogue allows.
                            let n = room.prices.len() as u32;
                            for k in 1..=rng.between(1, EXTRA_LINES) as u32 {
                                if k >= n {
                                    break;
                                }
                                let other = (product - 1 + k) % n + 1;
                                session.push(FollowUp::Purchase {
                                    product: other,
                                    order,
                                    quantity: quantity(rng),
                                });
                            }
                        }
                    }
                    Draft {
                        product,
                        ..draft(EventType::AddToCart, viewer)
                    }
                }
                FollowUp::Purchase {
                    product,
                    order,
                    quantity,
                } => {
                    if rng.chance(odds.refund) {
                        room.refunds.push(HeldRefund {
                            viewer,
                            product,
                            order,
                            quantity,
                        });
                    }
                    Draft {
                        product,
                        order,
                        quantity,
                        unit_price: room.prices[product as usize - 1],
                        ..draft(EventType::Purchase, viewer)
                    }
                }
            });
        }

        let mut roll = rng.below(STEP_TOTAL);
        let step = STEP_WEIGHTS
            .iter()
            .find(|(_, weight)| {
                let hit = roll < *weight;
                roll = roll.saturating_sub(*weight);
                hit
            })
            .map_or(Step::Like, |(step, _)| *step);
        let ty = match step {
            Step::Leave => {
                if rng.chance(odds.reenter) {
                    session.away = true;
                } else {
                    room.sessions.swap_remove(at);
                }
                EventType::Leave
            }
            Step::Vanish => {
                room.sessions.swap_remove(at);
                return None;
            }
            Step::Impression => {
                let n = room.prices.len() as u64;
                let pinned = n.min(3);
                let product = if rng.chance(odds.pinned) {
                    rng.below(pinned)
                } else {
                    rng.below(n)
                } as u32
                    + 1;
                if rng.chance(odds.click) {
                    session.push(FollowUp::Click { product });
                }
                return Some(Draft {
                    product,
                    ..draft(EventType::Impression, viewer)
                });
            }
            Step::Like => EventType::Like,
            Step::Comment => EventType::Comment,
            Step::Share => EventType::Share,
            Step::Follow => EventType::Follow,
        };
        Some(draft(ty, viewer))
    }
}

/// Units of one order line: mostly 1.
fn quantity(rng: &mut Rng) -> u32 {
    match rng.below(10) {
        0..=6 => 1,
        7..=8 => 2,
        _ => 3,
    }
}

/// Mostly USD; EUR, GBP, JPY (zero-decimal), BRL and IDR for the rest.
fn pick_currency(rng: &mut Rng) -> Currency {
    let code = match rng.below(100) {
        0..=54 => b"USD",
        55..=69 => b"EUR",
        70..=77 => b"GBP",
        78..=85 => b"JPY",
        86..=92 => b"BRL",
        _ => b"IDR",
    };
    Currency(*code)
}

/// A shelf price in minor units: cheap items are the most common, and prices
/// end the way shops write them ($19.99, ¥1,980, R$ 89,90, Rp 149.000).
/// Integer-only, so a seed means the same catalogue on every platform.
fn price(currency: Currency, rng: &mut Rng) -> i64 {
    // Whole units, drawn in three bands: low, mid, premium.
    let mut units = |lo: u64, hi: u64| -> u64 {
        let (a, b) = match rng.below(100) {
            0..=54 => (lo, lo * 10),
            55..=89 => (lo * 10, lo * 100),
            _ => (lo * 100, hi),
        };
        rng.between(a, b.min(hi))
    };
    let minor = match &currency.0 {
        b"JPY" => units(3, 600) * 100 - 20,
        b"BRL" => units(10, 2_000) * 100 - 10,
        b"IDR" => units(15, 2_500) * 1_000 * 100,
        _ => units(1, 499) * 100 + 99,
    };
    minor as i64
}

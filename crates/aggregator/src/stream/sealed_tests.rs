//! A sealed window's peak, read from the end of its encoding.

use proptest::prelude::*;

use super::{seal, sealed_peak, unseal, Figures};
use crate::event::Action;
use crate::ids::id_hash;
use crate::testkit::{event, purchase};

proptest! {
    #[test]
    fn a_sealed_windows_peak_read_from_its_end_is_its_figures(
        viewers in prop::collection::vec(any::<u64>(), 0..300),
        buyers in prop::collection::vec(any::<u64>(), 0..50),
        likes in 0usize..200,
        concurrent in prop_oneof![0u64..300, any::<u64>()],
        peak in prop_oneof![0u64..300, Just(127), Just(128), Just(16_383), Just(16_384), any::<u64>()],
    ) {
        let mut figures = Figures::default();
        let like = event("e", "live-1", "u", 1_764_120_000_123, Action::Like);
        for _ in 0..likes {
            figures.count(&like, 0, 0);
        }
        let view = event("v", "live-1", "u", 1_764_120_000_123, Action::View);
        for viewer in viewers {
            figures.count(&view, viewer, 0);
        }
        // The distinct buyers' raw hashes come just before `concurrent`
        // and `peak`: their last byte is often 0x80 or above.
        for (i, buyer) in buyers.into_iter().enumerate() {
            let order = format!("o{i}");
            let bought = purchase("p1", &order, 1, 100);
            let e = event("p", "live-1", "u", 1_764_120_000_123, bought);
            figures.count(&e, buyer, id_hash(0, &order));
        }
        figures.concurrent = concurrent;
        figures.peak = peak;
        let bytes = seal(&figures);
        let decoded = unseal(&bytes);
        prop_assert_eq!((decoded.concurrent, decoded.peak), (concurrent, peak));
        prop_assert_eq!(sealed_peak(&bytes), peak);
    }
}

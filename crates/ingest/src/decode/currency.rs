//! The ISO 4217 alphabetic codes a purchase or refund may carry.
//!
//! Lookup is one bit test in a table covering every `AAA`..=`ZZZ` code, built
//! at compile time from [`ISO_4217`].

/// Current ISO 4217 codes (list one, 2025), sorted: national currencies,
/// funds (`BOV`, `CHE`, `CHW`, `CLF`, `COU`, `MXV`, `USN`, `UYI`, `UYW`),
/// precious metals (`XAG`, `XAU`, `XPD`, `XPT`), units of account, and the
/// testing and "no currency" codes (`XTS`, `XXX`). `ANG` and `BGN`, withdrawn
/// in 2025–2026 in favour of `XCG` and `EUR`, stay accepted so that late or
/// replayed records from the changeover still count.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", //
    "BAM", "BBD", "BDT", "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", //
    "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", //
    "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", //
    "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", //
    "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", //
    "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", //
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", //
    "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", //
    "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", //
    "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", //
    "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", //
    "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", //
    "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", //
    "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", //
    "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XAG", //
    "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", //
    "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG", //
];

/// Number of possible three-letter codes, 26³.
const SPACE: usize = 26 * 26 * 26;

/// Position of a three-capital-letter code in `0..SPACE`; `None` otherwise.
const fn index(code: [u8; 3]) -> Option<usize> {
    let mut ix = 0;
    let mut i = 0;
    while i < 3 {
        let c = code[i];
        if !c.is_ascii_uppercase() {
            return None;
        }
        ix = ix * 26 + (c - b'A') as usize;
        i += 1;
    }
    Some(ix)
}

/// One bit per possible code, set for the codes of [`ISO_4217`].
static KNOWN: [u64; SPACE.div_ceil(64)] = {
    let mut bits = [0u64; SPACE.div_ceil(64)];
    let mut i = 0;
    while i < ISO_4217.len() {
        let b = ISO_4217[i].as_bytes();
        assert!(b.len() == 3, "an ISO 4217 code has three letters");
        match index([b[0], b[1], b[2]]) {
            Some(ix) => bits[ix / 64] |= 1 << (ix % 64),
            None => panic!("an ISO 4217 code is three capital letters"),
        }
        i += 1;
    }
    bits
};

/// Whether `code` is a current ISO 4217 code, in capitals (`USD`, not `usd`).
pub fn is_iso4217(code: [u8; 3]) -> bool {
    match index(code) {
        Some(ix) => KNOWN[ix / 64] & (1 << (ix % 64)) != 0,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_unique_and_capital() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ISO_4217.len(), 180);
    }

    #[test]
    fn lookup_matches_the_list() {
        let mut count = 0;
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = [a, b, c];
                    let listed = ISO_4217.iter().any(|s| s.as_bytes() == code);
                    assert_eq!(is_iso4217(code), listed, "{code:?}");
                    count += usize::from(listed);
                }
            }
        }
        assert_eq!(count, ISO_4217.len());
    }

    #[test]
    fn recent_and_special_codes() {
        for code in [
            "USD", "EUR", "JPY", "XTS", "XXX", "XAU", "ZWG", "XCG", "VES", "VED", "SLE", "STN",
            "MRU", "CLF",
        ] {
            let b = code.as_bytes();
            assert!(is_iso4217([b[0], b[1], b[2]]), "{code}");
        }
        for code in [
            *b"usd",
            *b"Usd",
            *b"ABC",
            *b"ZWL",
            *b"HRK",
            *b"VEF",
            *b"MRO",
            *b"US1",
            [0xff, b'S', b'D'],
        ] {
            assert!(!is_iso4217(code), "{code:?}");
        }
    }
}

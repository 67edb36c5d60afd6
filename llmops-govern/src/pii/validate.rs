//! Checksum and range validators used by the recognizers. Each takes the matched text and
//! says whether it is a real instance of the type.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The digits of `s`, ignoring spaces and hyphens; `None` if anything else is present.
fn digits(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => out.push(b - b'0'),
            b' ' | b'-' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The Luhn (mod 10) check: double every second digit from the right, sum the digits.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A payment card number: 13–19 digits (spaces/hyphens allowed), a known issuer prefix, not
/// all one digit, and a valid Luhn check digit.
pub fn credit_card(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if !(13..=19).contains(&d.len()) || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let prefix2 = u32::from(d[0]) * 10 + u32::from(d[1]);
    let prefix4 = prefix2 * 100 + u32::from(d[2]) * 10 + u32::from(d[3]);
    let issuer = match d[0] {
        4 => true,                                                // Visa
        5 => (51..=55).contains(&prefix2),                        // Mastercard
        2 => (2221..=2720).contains(&prefix4),                    // Mastercard 2-series
        3 => matches!(prefix2, 34 | 37 | 35 | 36 | 30 | 38 | 39), // Amex, JCB, Diners
        6 => true,                                                // Discover, UnionPay, Maestro
        _ => false,
    };
    issuer && luhn(&d)
}

/// IBAN lengths per country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// An IBAN: known country, the country's length, and ISO 7064 mod-97 == 1 (letters A=10 …
/// Z=35, the first four characters moved to the end). Spaces are ignored.
pub fn iban(s: &str) -> bool {
    let compact: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if compact.len() < 15 || !compact.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let Ok(country) = std::str::from_utf8(&compact[..2]) else {
        return false;
    };
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| *c == country) else {
        return false;
    };
    if compact.len() != len || !compact[2].is_ascii_digit() || !compact[3].is_ascii_digit() {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// A US Social Security number: `AAA-GG-SSSS` with one consistent delimiter (`-`, space,
/// `.`) or none; area not 000, 666 or 900–999; group not 00; serial not 0000; not all one
/// digit; not a known advertising/test number (078-05-1120, 219-09-9999, 123-45-6789).
pub fn us_ssn(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (d, delims): (Vec<u8>, Vec<u8>) = {
        let mut d = Vec::new();
        let mut delims = Vec::new();
        for &b in bytes {
            if b.is_ascii_digit() {
                d.push(b - b'0');
            } else {
                delims.push(b);
            }
        }
        (d, delims)
    };
    if d.len() != 9 {
        return false;
    }
    match delims.as_slice() {
        [] => {}
        [a, b] if a == b && matches!(a, b'-' | b' ' | b'.') => {
            if bytes.get(3) != Some(a) || bytes.get(6) != Some(a) {
                return false;
            }
        }
        _ => return false,
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial = d[5..].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    if d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let n: u64 = d.iter().fold(0u64, |acc, &x| acc * 10 + u64::from(x));
    !matches!(n, 78_051_120 | 219_099_999 | 123_456_789)
}

/// An IPv4 address in dotted-quad form without leading zeros.
pub fn ipv4(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok()
}

/// An IPv6 address (any textual form `std` accepts), with at least two colons.
pub fn ipv6(s: &str) -> bool {
    s.bytes().filter(|&b| b == b':').count() >= 2 && s.parse::<Ipv6Addr>().is_ok()
}

/// An e-mail address: local part 1–64 characters without leading, trailing or doubled dots;
/// total at most 254; domain labels 1–63 characters not starting or ending with `-`; a TLD of
/// letters.
pub fn email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || s.len() > 254 {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let tld = labels[labels.len() - 1];
    if tld.len() < 2 || !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
        return false;
    }
    labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// A JSON Web Token: three base64url parts whose first decodes to a JSON object with `alg`.
pub fn jwt(s: &str) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = s.split('.');
    let Some(header) = parts.next() else {
        return false;
    };
    if parts.clone().count() != 2 {
        return false;
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .is_some_and(|v| v.get("alg").is_some())
}

/// Regions tried, in order, for phone numbers written without a `+` country code.
const PHONE_REGIONS: &[phonenumber::country::Id] = {
    use phonenumber::country::Id;
    &[
        Id::US,
        Id::GB,
        Id::DE,
        Id::FR,
        Id::IN,
        Id::BR,
        Id::AU,
        Id::ES,
        Id::IT,
        Id::NL,
    ]
};

/// A phone number valid per libphonenumber's metadata, in a shape people write phone numbers
/// in. International numbers (`+…`) are checked against their country. National numbers must
/// look like one: the North American 3-3-4 grouping (`(650) 253-0000`, `650.253.0000`), or a
/// leading trunk `0` (`020 7946 0958`), and be valid in one of a list of common regions.
/// Digit runs shaped like SSNs (3-2-4), dates (4-2-2) or bare numbers are not phone numbers.
/// 7–15 digits; letters are not allowed.
pub fn phone(s: &str) -> bool {
    let s = s.trim();
    let n_digits = s.bytes().filter(u8::is_ascii_digit).count();
    if !(7..=15).contains(&n_digits) || s.bytes().any(|b| b.is_ascii_alphabetic()) {
        return false;
    }
    if s.starts_with('+') {
        return phonenumber::parse(None, s).is_ok_and(|n| phonenumber::is_valid(&n));
    }
    let groups: Vec<usize> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    if matches!(groups.as_slice(), [3, 2, 4] | [4, 2, 2] | [2, 2, 4]) {
        return false; // SSN or date shapes
    }
    let nanp = matches!(groups.as_slice(), [3, 3, 4] | [1, 3, 3, 4]);
    let trunk = s.trim_start_matches('(').starts_with('0') && groups.len() >= 2;
    if nanp {
        return phonenumber::parse(Some(phonenumber::country::Id::US), s)
            .is_ok_and(|n| phonenumber::is_valid(&n));
    }
    trunk
        && PHONE_REGIONS
            .iter()
            .any(|&r| phonenumber::parse(Some(r), s).is_ok_and(|n| phonenumber::is_valid(&n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_edge_cases() {
        assert!(credit_card("4111 1111 1111 1111"));
        assert!(credit_card("4111-1111-1111-1111"));
        assert!(credit_card("5500005555555559"));
        assert!(credit_card("378282246310005")); // Amex, 15 digits
        assert!(credit_card("6011111111111117")); // Discover
        assert!(credit_card("2223003122003222")); // Mastercard 2-series
        assert!(!credit_card("4111111111111112"), "bad check digit");
        assert!(!credit_card("1234567812345670"), "Luhn-valid but no issuer");
        assert!(!credit_card("0000000000000000"), "all zeros");
        assert!(!credit_card("4444444444444444"), "one digit repeated");
        assert!(!credit_card("411111111111"), "12 digits");
        assert!(!credit_card("41111111111111111111"), "20 digits");
        assert!(!credit_card("4111x1111 1111 1111"));
        assert!(luhn(&[0]));
        assert!(!luhn(&[]));
    }

    #[test]
    fn iban_edge_cases() {
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(iban("de89370400440532013000"), "case-insensitive");
        assert!(iban("NO9386011117947"));
        assert!(iban("FR1420041010050500013M02606"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"), "bad checksum");
        assert!(!iban("DE8937040044053201300"), "wrong length for DE");
        assert!(!iban("ZZ89370400440532013000"), "unknown country");
        assert!(
            !iban("GBXX WEST 1234 5698 7654 32"),
            "check digits not digits"
        );
        assert!(!iban("GB82-WEST-1234-5698-7654-32"));
    }

    #[test]
    fn ssn_edge_cases() {
        assert!(us_ssn("536-22-1234"));
        assert!(us_ssn("536 22 1234"));
        assert!(us_ssn("536221234"));
        assert!(!us_ssn("000-12-3456"), "area 000");
        assert!(!us_ssn("666-12-3456"), "area 666");
        assert!(!us_ssn("900-12-3456"), "area 9xx (ITIN range)");
        assert!(!us_ssn("536-00-1234"), "group 00");
        assert!(!us_ssn("536-22-0000"), "serial 0000");
        assert!(!us_ssn("111-11-1111"), "one digit");
        assert!(!us_ssn("078-05-1120"), "Woolworth");
        assert!(!us_ssn("123-45-6789"), "example number");
        assert!(!us_ssn("536-22.1234"), "mixed delimiters");
        assert!(!us_ssn("5362-2-1234"), "wrong grouping");
    }

    #[test]
    fn ip_edge_cases() {
        assert!(ipv4("192.168.1.20"));
        assert!(ipv4("8.8.8.8"));
        assert!(!ipv4("256.1.1.1"));
        assert!(!ipv4("1.2.3"));
        assert!(!ipv4("01.2.3.4"), "leading zero");
        assert!(ipv6("2001:db8::1"));
        assert!(ipv6("::1"));
        assert!(ipv6("fe80::1ff:fe23:4567:890a"));
        assert!(ipv6("::ffff:192.0.2.128"));
        assert!(!ipv6("12:30:45"));
        assert!(!ipv6("2001:db8:::1"));
        assert!(!ipv6("gggg::1"));
    }

    #[test]
    fn email_edge_cases() {
        assert!(email("ann.lee+tag@mail.example.co.uk"));
        assert!(!email(".ann@example.com"));
        assert!(!email("ann..lee@example.com"));
        assert!(!email("ann@-example.com"));
        assert!(!email("ann@example"));
        assert!(!email("ann@example.c0m"));
        assert!(!email(&format!("{}@example.com", "a".repeat(65))));
    }

    #[test]
    fn jwt_edge_cases() {
        let good = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert!(jwt(good));
        assert!(
            !jwt("eyJub3RhbGciOjF9.eyJzdWIiOiIxIn0.abcdefghijkl"),
            "no alg"
        );
        assert!(!jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0"), "two parts");
        assert!(!jwt("not-base64!.a.b"));
    }

    #[test]
    fn phone_edge_cases() {
        assert!(phone("+1 650-253-0000"));
        assert!(phone("(650) 253-0000"));
        assert!(phone("+44 20 7031 3000"));
        assert!(phone("+49 30 901820"));
        assert!(phone("020 7031 3000"));
        assert!(!phone("+1 555-0100"), "too short for NANP");
        assert!(
            !phone("+1 123-456-7890"),
            "NANP area codes do not start with 1"
        );
        assert!(!phone("12345"));
        assert!(!phone("1234567890123456"), "16 digits");
        assert!(!phone("+44 20 7031 300A"));
        assert!(!phone("536-22-1234"), "SSN shape");
        assert!(!phone("2024-01-15"), "date shape");
        assert!(!phone("555-0100"), "seven digits without area code");
        assert!(phone("650.253.0000"));
    }
}

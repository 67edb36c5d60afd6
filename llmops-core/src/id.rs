//! Unique ids for requests, reservations and responses.
//!
//! [`uuid_v7`] is what `uuid::Uuid::now_v7` gives — a time-ordered UUID (RFC 9562, version 7:
//! 48 bits of Unix milliseconds, then random bits) — without its cost on the request path:
//! `now_v7` asks the operating system for randomness on every call (two `getrandom` system
//! calls per id), whereas this takes the random bits from the thread's cached CSPRNG
//! (`rand::rng()`, ChaCha seeded from the operating system and reseeded periodically). Ids are
//! ordered by their millisecond; within one millisecond their order is random (RFC 9562 makes
//! the sub-millisecond counter optional).

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng as _;

/// A new time-ordered (version 7) UUID.
pub fn uuid_v7() -> uuid::Uuid {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let random: [u8; 10] = rand::rng().random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// [`uuid_v7`] in its usual text form (lowercase, hyphenated).
pub fn uuid_v7_string() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid_v7().hyphenated().encode_lower(&mut buf).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_unique_and_ordered_by_millisecond() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ids: Vec<uuid::Uuid> = (0..1000).map(|_| uuid_v7()).collect();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let mut last_ms = 0;
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
            assert!(
                (before..=after).contains(&ms),
                "{ms} not in {before}..={after}"
            );
            assert!(ms >= last_ms, "ids go back in time");
            last_ms = ms;
        }
    }

    #[test]
    fn the_text_form_is_lowercase_hyphenated() {
        let s = uuid_v7_string();
        assert_eq!(s.len(), 36);
        assert_eq!(uuid::Uuid::parse_str(&s).unwrap().get_version_num(), 7);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.matches('-').count(), 4);
    }
}

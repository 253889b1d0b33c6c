//! The page cursor of job lists: where the last page ended, as `(created_at, id)` of
//! its last job, written as an opaque string (URL-safe base64 of the microseconds and
//! the id's bytes) that callers hand back unread.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{InspectError, Result};

/// Bytes of a cursor: 8 of microseconds since the epoch, 16 of the id.
const LEN: usize = 24;

/// The cursor of the page after the job created at `at` with this id.
pub(super) fn encode(at: DateTime<Utc>, id: Uuid) -> String {
    let mut bytes = [0u8; LEN];
    bytes[..8].copy_from_slice(&at.timestamp_micros().to_be_bytes());
    bytes[8..].copy_from_slice(id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position a cursor names; an error says the cursor is not one of ours.
pub(super) fn decode(cursor: &str) -> Result<(DateTime<Utc>, Uuid)> {
    let invalid = || InspectError::Invalid(format!("invalid cursor {cursor:?}"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let bytes: [u8; LEN] = bytes.try_into().map_err(|_| invalid())?;
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&bytes[..8]);
    let at = DateTime::from_timestamp_micros(i64::from_be_bytes(micros)).ok_or_else(invalid)?;
    let id = Uuid::from_slice(&bytes[8..]).map_err(|_| invalid())?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_is_not_one() {
        let at = DateTime::from_timestamp_micros(1_765_000_000_123_456).expect("in range");
        let id = Uuid::new_v4();
        let cursor = encode(at, id);
        assert!(
            cursor
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(decode(&cursor).expect("ours"), (at, id));
        for bad in ["", "not a cursor", &cursor[1..], "AAAA"] {
            let err = decode(bad).expect_err("not a cursor");
            assert_eq!(err.kind(), super::super::ErrorKind::Invalid, "{bad:?}");
        }
    }
}

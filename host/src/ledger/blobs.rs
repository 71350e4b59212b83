//! Content-addressed storage of large strings.
//!
//! Before a JSON payload is written to `events`, every string longer than
//! [`INLINE_LIMIT`] bytes is moved to the `blobs` table (keyed by its SHA-256) and
//! replaced by `{"$blob": "<hex>"}`. A conversation that grows by one message per
//! call therefore stores each earlier message once, however many calls repeat it.

use super::Connection;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Strings up to this many bytes stay inline in the event row.
pub const INLINE_LIMIT: usize = 256;

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    lower_hex(&Sha256::digest(bytes))
}

/// `bytes` as lowercase hex, as `hex::encode` writes it; a byte table in place of its
/// char iterator (about 2 k instructions per hash, on every event's replay key).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The hex SHA-256 of `value` as compact JSON (the bytes `value.to_string()` gives).
/// The text is built first and hashed in one pass: feeding the hasher token by token
/// as `serde_json` writes cost more than the allocation.
pub fn sha256_hex_json(value: &Value) -> String {
    let text = serde_json::to_vec(value).expect("a JSON value always serializes");
    sha256_hex(&text)
}

/// About how many bytes `value` takes as JSON (strings by length, a few bytes per
/// other node), without serializing it.
pub fn approx_json_bytes(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(items) => 2 + items.iter().map(|v| approx_json_bytes(v) + 1).sum::<u64>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() as u64 + 4 + approx_json_bytes(v))
                .sum::<u64>()
        }
        _ => 8,
    }
}

/// Store bytes (once) and return their hash.
pub fn put(conn: &Connection, bytes: &[u8]) -> rusqlite::Result<String> {
    let hash = sha256_hex(bytes);
    put_hashed(conn, &hash, bytes)?;
    Ok(hash)
}

/// Store `bytes` under `hash`, which the caller has computed ([`sha256_hex`]).
pub fn put_hashed(conn: &Connection, hash: &str, bytes: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?1, ?2, ?3)")?
        .execute(params![hash, bytes.len() as i64, bytes])?;
    Ok(())
}

/// Fetch a blob by hash.
pub fn get(conn: &Connection, hash: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT data FROM blobs WHERE hash = ?1")?
        .query_row([hash], |row| row.get(0))
        .optional()
}

/// A blob as text ("" if it is missing, which a consistent ledger never has).
pub fn text(conn: &Connection, hash: &str) -> rusqlite::Result<String> {
    Ok(get(conn, hash)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default())
}

/// Move large strings of `value` into `blobs`, in place.
/// Returns whether anything moved.
pub fn externalize(conn: &Connection, value: &mut Value) -> rusqlite::Result<bool> {
    let mut moved = false;
    match value {
        Value::String(s) if s.len() > INLINE_LIMIT => {
            let hash = put(conn, s.as_bytes())?;
            *value = serde_json::json!({ "$blob": hash });
            moved = true;
        }
        Value::Array(items) => {
            for item in items {
                moved |= externalize(conn, item)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                moved |= externalize(conn, item)?;
            }
        }
        _ => {}
    }
    Ok(moved)
}

/// Resolve `{"$blob": ..}` references of `value`, in place (the inverse of [`externalize`]).
pub fn internalize(conn: &Connection, value: &mut Value) -> rusqlite::Result<()> {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("$blob") => {
            if let Some(hash) = map.get("$blob").and_then(Value::as_str) {
                let bytes = get(conn, hash)?.unwrap_or_default();
                *value = Value::String(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        Value::Array(items) => {
            for item in items {
                internalize(conn, item)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                internalize(conn, item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn json_hash_is_the_hash_of_the_compact_text() {
        let value = serde_json::json!({
            "chat": { "messages": [{ "role": "user", "content": "héllo \"x\"\n" }] },
            "pin": null, "n": 1.5, "z": [1, -2, true],
        });
        assert_eq!(
            sha256_hex_json(&value),
            sha256_hex(value.to_string().as_bytes())
        );
    }
}

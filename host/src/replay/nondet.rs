//! The recorded form of a guest's clock and random reads (`wasi.nondet` events).
//!
//! One [`NondetRead`] per WASI call; a batch of them is one event whose response
//! counts the reads by kind (for people reading the ledger) and carries the reads
//! themselves in a compact binary encoding (base64, moved to `blobs` by the ledger
//! like any long string). Replay decodes both this form and the earlier one (a JSON
//! array of one-key objects, random bytes in hex).
//!
//! Not for: taking or handing back reads at run time (`crate::capabilities::wasi`).

use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Why a recorded `wasi.nondet` event could not be read back.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NondetDecodeError(pub String);

/// One clock or random read, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum NondetRead {
    /// `wall-clock.now`, nanoseconds since the Unix epoch.
    Wall(u64),
    /// `monotonic-clock.now`, nanoseconds since the agent started.
    Monotonic(u64),
    /// Bytes from the secure generator (one read: one `get-random-*` call).
    Random(Vec<u8>),
    /// Bytes from the insecure generator.
    InsecureRandom(Vec<u8>),
    /// The seed handed out by `insecure-seed`.
    InsecureSeed(u128),
}

impl NondetRead {
    /// The kind's name, as `wasi.nondet` events count them.
    pub fn kind(&self) -> &'static str {
        match self {
            NondetRead::Wall(_) => "wall_ns",
            NondetRead::Monotonic(_) => "monotonic_ns",
            NondetRead::Random(_) => "random",
            NondetRead::InsecureRandom(_) => "insecure_random",
            NondetRead::InsecureSeed(_) => "insecure_seed",
        }
    }
}

/// The format tag of compact `wasi.nondet` events.
const FORMAT_V2: &str = "nondet-v2";

/// Encode reads compactly: one record per read, a tag byte then its value (u64/u128
/// little-endian; random bytes as a u32 length then the bytes).
fn encode_reads(reads: &[NondetRead]) -> Vec<u8> {
    let mut out = Vec::with_capacity(reads.len() * 9);
    for r in reads {
        match r {
            NondetRead::Wall(ns) => {
                out.push(b'w');
                out.extend_from_slice(&ns.to_le_bytes());
            }
            NondetRead::Monotonic(ns) => {
                out.push(b'm');
                out.extend_from_slice(&ns.to_le_bytes());
            }
            NondetRead::Random(b) | NondetRead::InsecureRandom(b) => {
                out.push(if matches!(r, NondetRead::Random(_)) {
                    b'r'
                } else {
                    b'i'
                });
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            NondetRead::InsecureSeed(seed) => {
                out.push(b's');
                out.extend_from_slice(&seed.to_le_bytes());
            }
        }
    }
    out
}

fn decode_reads(mut data: &[u8]) -> Result<Vec<NondetRead>, String> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if data.len() < n {
            return Err("truncated record".into());
        }
        let (head, rest) = data.split_at(n);
        *data = rest;
        Ok(head)
    }
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let mut out = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        data = rest;
        let read = match tag {
            b'w' => NondetRead::Wall(u64_of(take(&mut data, 8)?)),
            b'm' => NondetRead::Monotonic(u64_of(take(&mut data, 8)?)),
            b'r' | b'i' => {
                let len = u32::from_le_bytes(take(&mut data, 4)?.try_into().expect("4 bytes"));
                let bytes = take(&mut data, len as usize)?.to_vec();
                if tag == b'r' {
                    NondetRead::Random(bytes)
                } else {
                    NondetRead::InsecureRandom(bytes)
                }
            }
            b's' => NondetRead::InsecureSeed(u128::from_le_bytes(
                take(&mut data, 16)?.try_into().expect("16 bytes"),
            )),
            other => return Err(format!("unknown record tag {other}")),
        };
        out.push(read);
    }
    Ok(out)
}

/// The response of a `wasi.nondet` event holding `reads`: how many of each kind (for
/// people reading the ledger) and the reads themselves, compactly encoded (base64;
/// the ledger moves the long string to its `blobs` table).
pub fn nondet_response(reads: &[NondetRead]) -> Value {
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reads {
        *kinds.entry(r.kind()).or_default() += 1;
    }
    json!({
        "format": FORMAT_V2,
        "reads": reads.len(),
        "kinds": kinds,
        "data": base64::engine::general_purpose::STANDARD.encode(encode_reads(reads)),
    })
}

/// The reads a `wasi.nondet` event recorded: the compact format, or the earlier one
/// (a JSON array of one-key objects, random bytes in hex) for ledgers written before.
pub fn reads_of_event(response: &Value) -> Result<Vec<NondetRead>, NondetDecodeError> {
    reads_of(response).map_err(NondetDecodeError)
}

fn reads_of(response: &Value) -> Result<Vec<NondetRead>, String> {
    if let Value::Array(items) = response {
        return items.iter().map(legacy_read).collect();
    }
    if response["format"] != FORMAT_V2 {
        return Err(format!("unknown wasi.nondet format {}", response["format"]));
    }
    let data = response["data"]
        .as_str()
        .ok_or("wasi.nondet without data")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("wasi.nondet data: {e}"))?;
    decode_reads(&bytes)
}

fn legacy_read(v: &Value) -> Result<NondetRead, String> {
    let bytes = |h: &Value| {
        h.as_str()
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| format!("bad recorded random bytes {h}"))
    };
    let num = |n: &Value| n.as_u64().ok_or_else(|| format!("bad recorded clock {n}"));
    if let Some(n) = v.get("wall_ns") {
        Ok(NondetRead::Wall(num(n)?))
    } else if let Some(n) = v.get("monotonic_ns") {
        Ok(NondetRead::Monotonic(num(n)?))
    } else if let Some(h) = v.get("random") {
        Ok(NondetRead::Random(bytes(h)?))
    } else if let Some(h) = v.get("insecure_random") {
        Ok(NondetRead::InsecureRandom(bytes(h)?))
    } else if let Some(s) = v.get("insecure_seed") {
        s.as_str()
            .and_then(|s| s.parse().ok())
            .map(NondetRead::InsecureSeed)
            .ok_or_else(|| format!("bad recorded seed {s}"))
    } else {
        Err(format!("unknown recorded read {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_round_trip_compactly() {
        let reads = vec![
            NondetRead::InsecureSeed(u128::MAX - 7),
            NondetRead::Wall(1_764_000_000_000_000_000),
            NondetRead::Monotonic(42),
            NondetRead::Random(vec![1, 2, 3, 4]),
            NondetRead::InsecureRandom(vec![9; 32]),
        ];
        let event = nondet_response(&reads);
        assert_eq!(event["reads"], 5);
        assert_eq!(event["kinds"]["wall_ns"], 1);
        assert_eq!(reads_of_event(&event).unwrap(), reads);
        // 1000 clock reads take 9 bytes each, not a JSON object each.
        let clocks = vec![NondetRead::Monotonic(123_456_789); 1000];
        let data = nondet_response(&clocks)["data"].as_str().unwrap().len();
        assert!(data <= 12_000, "{data}");
    }

    #[test]
    fn the_earlier_format_still_replays() {
        let legacy = json!([
            {"insecure_seed": "340282366920938463463374607431768211448"},
            {"wall_ns": 5},
            {"monotonic_ns": 6},
            {"random": "01020304"},
            {"insecure_random": "ff"},
        ]);
        assert_eq!(
            reads_of_event(&legacy).unwrap(),
            vec![
                NondetRead::InsecureSeed(u128::MAX - 7),
                NondetRead::Wall(5),
                NondetRead::Monotonic(6),
                NondetRead::Random(vec![1, 2, 3, 4]),
                NondetRead::InsecureRandom(vec![0xff]),
            ]
        );
        assert!(reads_of_event(&json!({"format": "other"})).is_err());
        let cut = json!({"format": "nondet-v2", "data": "dw=="}); // "w" and no value
        assert!(reads_of_event(&cut).is_err());
    }
}

//! gRPC answers compared without their schema: the body's length-prefixed frames, each
//! message decoded from protobuf's wire format into the same tree the JSON comparison
//! walks — an array of messages, each an object keyed by field number (`/0/2/1` is the
//! first message's field 2's field 1), a field seen more than once an array. A
//! length-delimited field is text when it is printable UTF-8, else a nested message when
//! it decodes as one, else bytes (`0x…`). Ignore patterns and noise learning then work
//! on field-number paths as they do on JSON pointers. Compressed messages are
//! decompressed first (`grpc-encoding`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::HeaderValue;

use super::decode::{self, Decoded};
use super::json::{Json, Num};
use super::SkipReason;

/// Nested messages decoded this deep; deeper ones compare as bytes.
const MAX_DEPTH: usize = 32;

/// A gRPC body's length-prefixed frames as they are: each message with whether it is
/// compressed. `Err` when a frame is cut short or its flag is not 0 or 1.
pub fn raw_frames(mut body: &[u8]) -> Result<Vec<(bool, &[u8])>, SkipReason> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (head, rest) = body.split_at_checked(5).ok_or(SkipReason::Encoding)?;
        let compressed = match head[0] {
            0 => false,
            1 => true,
            _ => return Err(SkipReason::Encoding),
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let (msg, rest) = rest.split_at_checked(len).ok_or(SkipReason::Encoding)?;
        out.push((compressed, msg));
        body = rest;
    }
    Ok(out)
}

/// The messages of a gRPC body, a compressed one decompressed with the answer's
/// `grpc-encoding` (gzip, deflate), all of them together at most `cap` bytes. A
/// compressed message without an encoding banyan decodes is `Encoding`.
pub fn frames<'b>(
    body: &'b [u8],
    encoding: Option<&HeaderValue>,
    cap: usize,
) -> Result<Vec<Cow<'b, [u8]>>, SkipReason> {
    let mut left = cap;
    let mut out = Vec::new();
    for (compressed, msg) in raw_frames(body)? {
        let msg = match (compressed, encoding) {
            (false, _) => Cow::Borrowed(msg),
            (true, None) => return Err(SkipReason::Encoding),
            (true, Some(coding)) => match decode::decode(Some(coding), msg, left) {
                // A compressed flag with `identity` is a sender's error.
                Decoded::Body(Cow::Borrowed(_)) | Decoded::Unsupported => {
                    return Err(SkipReason::Encoding)
                }
                Decoded::Body(Cow::Owned(m)) => Cow::Owned(m),
                Decoded::TooLarge => return Err(SkipReason::ResponseTooLarge),
            },
        };
        left = left.saturating_sub(msg.len());
        out.push(msg);
    }
    Ok(out)
}

/// A gRPC body as the tree the comparison walks.
pub fn tree(
    body: &[u8],
    encoding: Option<&HeaderValue>,
    cap: usize,
) -> Result<Json<'static>, SkipReason> {
    let messages = frames(body, encoding, cap)?
        .iter()
        .map(|m| message(m, 0).unwrap_or_else(|| bytes(m)))
        .collect();
    Ok(Json::Arr(messages))
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One message's fields, or `None` when the bytes are not a protobuf message.
fn message(b: &[u8], depth: usize) -> Option<Json<'static>> {
    let mut fields: BTreeMap<u32, Vec<Json<'static>>> = BTreeMap::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let number = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
        let value = match key & 7 {
            0 => Json::Num(Num::U(varint(b, &mut at)?)),
            1 => {
                let v = b.get(at..at + 8)?;
                at += 8;
                Json::Num(Num::U(u64::from_le_bytes(v.try_into().ok()?)))
            }
            5 => {
                let v = b.get(at..at + 4)?;
                at += 4;
                Json::Num(Num::U(u64::from(u32::from_le_bytes(v.try_into().ok()?))))
            }
            2 => {
                let len = usize::try_from(varint(b, &mut at)?).ok()?;
                let v = b.get(at..at.checked_add(len)?)?;
                at += len;
                delimited(v, depth)
            }
            _ => return None,
        };
        fields.entry(number).or_default().push(value);
    }
    let mut obj: Vec<(Cow<'static, str>, Json<'static>)> = fields
        .into_iter()
        .map(|(n, mut v)| {
            let value = if v.len() == 1 {
                v.pop().unwrap_or(Json::Null)
            } else {
                Json::Arr(v)
            };
            (Cow::Owned(n.to_string()), value)
        })
        .collect();
    // The comparison merges objects by key in string order.
    obj.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Json::Obj(obj))
}

fn delimited(v: &[u8], depth: usize) -> Json<'static> {
    if let Ok(text) = std::str::from_utf8(v) {
        if !text.chars().any(char::is_control) {
            return Json::Str(Cow::Owned(text.to_string()));
        }
    }
    if depth < MAX_DEPTH && !v.is_empty() {
        if let Some(m) = message(v, depth + 1) {
            return m;
        }
    }
    bytes(v)
}

fn bytes(v: &[u8]) -> Json<'static> {
    let mut hex = String::with_capacity(2 + v.len() * 2);
    hex.push_str("0x");
    for b in v {
        hex.push_str(&format!("{b:02x}"));
    }
    Json::Str(Cow::Owned(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(m: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
        out
    }

    /// Reply { message: "hi", upstream: "a", inner: Inner { n: 150 } } as field 3.
    fn reply(message: &str) -> Vec<u8> {
        let mut m = vec![0x0a, message.len() as u8];
        m.extend_from_slice(message.as_bytes());
        m.extend_from_slice(&[0x12, 1, b'a', 0x1a, 3, 0x08, 0x96, 0x01]);
        m
    }

    #[test]
    fn messages_decode_to_trees_keyed_by_field_number() {
        let body = [frame(&reply("hi")), frame(&reply("yo"))].concat();
        let Ok(Json::Arr(ms)) = tree(&body) else {
            panic!("not decoded");
        };
        assert_eq!(ms.len(), 2);
        let Json::Obj(fields) = &ms[0] else {
            panic!("not a message");
        };
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["1", "2", "3"]);
        assert_eq!(fields[0].1, Json::Str("hi".into()));
        assert_eq!(
            fields[2].1,
            Json::Obj(vec![("1".into(), Json::Num(Num::U(150)))])
        );
    }

    #[test]
    fn repeated_fields_are_arrays_and_bad_bytes_are_bytes() {
        let m = [0x08, 1, 0x08, 2, 0x12, 2, 0xff, 0x00];
        let Ok(Json::Arr(ms)) = tree(&frame(&m)) else {
            panic!("not decoded");
        };
        let Json::Obj(f) = &ms[0] else {
            panic!("not a message");
        };
        assert_eq!(
            f[0].1,
            Json::Arr(vec![Json::Num(Num::U(1)), Json::Num(Num::U(2))])
        );
        assert_eq!(f[1].1, Json::Str("0xff00".into()));
    }

    fn tree(body: &[u8]) -> Result<Json<'static>, SkipReason> {
        super::tree(body, None, 1 << 20)
    }

    fn gzip_frame(m: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(m).expect("gzip");
        let mut f = frame(&e.finish().expect("gzip"));
        f[0] = 1;
        f
    }

    #[test]
    fn compressed_messages_are_decompressed_with_the_answers_encoding() {
        let body = [gzip_frame(&reply("hi")), frame(&reply("yo"))].concat();
        let gzip = HeaderValue::from_static("gzip");
        let plain = [frame(&reply("hi")), frame(&reply("yo"))].concat();
        assert_eq!(
            super::tree(&body, Some(&gzip), 1 << 20).ok(),
            tree(&plain).ok(),
            "the same tree as the uncompressed messages"
        );
        // Decompressed beyond the cap: too large to compare.
        let big = gzip_frame(
            &[0x0a, 100]
                .into_iter()
                .chain([b'a'; 100])
                .collect::<Vec<_>>(),
        );
        assert!(matches!(
            super::tree(&big, Some(&gzip), 50),
            Err(SkipReason::ResponseTooLarge)
        ));
        // A coding banyan does not decode, or a compressed flag with none.
        let snappy = HeaderValue::from_static("snappy");
        assert!(matches!(
            super::tree(&body, Some(&snappy), 1 << 20),
            Err(SkipReason::Encoding)
        ));
        let identity = HeaderValue::from_static("identity");
        assert!(matches!(
            super::tree(&body, Some(&identity), 1 << 20),
            Err(SkipReason::Encoding)
        ));
        assert!(matches!(tree(&body), Err(SkipReason::Encoding)));
    }

    #[test]
    fn cut_frames_are_not_compared() {
        let mut cut = frame(&reply("hi"));
        cut.pop();
        assert!(matches!(tree(&cut), Err(SkipReason::Encoding)));
        let mut flagged = frame(&reply("hi"));
        flagged[0] = 2;
        assert!(matches!(tree(&flagged), Err(SkipReason::Encoding)));
        assert!(matches!(tree(&[]), Ok(Json::Arr(v)) if v.is_empty()));
        // Anything at all decodes to something, never panics.
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let _ = message(&junk, 0);
        }
    }
}

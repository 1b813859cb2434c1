//! gRPC answers compared without their schema: the body's length-prefixed frames, each
//! message decoded from protobuf's wire format into the same tree the JSON comparison
//! walks — an array of messages, each an object keyed by field number (`/0/2/1` is the
//! first message's field 2's field 1), a field seen more than once an array. A
//! length-delimited field is text when it is printable UTF-8, else a nested message when
//! it decodes as one, else bytes (`0x…`). Ignore patterns and noise learning then work
//! on field-number paths as they do on JSON pointers.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::json::{Json, Num};
use super::SkipReason;

/// Nested messages decoded this deep; deeper ones compare as bytes.
const MAX_DEPTH: usize = 32;

/// The messages of a gRPC body: `None` when a frame is cut short, or compressed
/// (`grpc-encoding`), which banyan does not decode.
pub fn frames(mut body: &[u8]) -> Result<Vec<&[u8]>, SkipReason> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (head, rest) = body.split_at_checked(5).ok_or(SkipReason::Encoding)?;
        if head[0] != 0 {
            return Err(SkipReason::Encoding);
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let (msg, rest) = rest.split_at_checked(len).ok_or(SkipReason::Encoding)?;
        out.push(msg);
        body = rest;
    }
    Ok(out)
}

/// A gRPC body as the tree the comparison walks.
pub fn tree(body: &[u8]) -> Result<Json<'static>, SkipReason> {
    let messages = frames(body)?
        .into_iter()
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

    #[test]
    fn cut_or_compressed_frames_are_not_compared() {
        let mut cut = frame(&reply("hi"));
        cut.pop();
        assert!(matches!(tree(&cut), Err(SkipReason::Encoding)));
        let mut compressed = frame(&reply("hi"));
        compressed[0] = 1;
        assert!(matches!(tree(&compressed), Err(SkipReason::Encoding)));
        assert!(matches!(tree(&[]), Ok(Json::Arr(v)) if v.is_empty()));
        // Anything at all decodes to something, never panics.
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let _ = message(&junk, 0);
        }
    }
}

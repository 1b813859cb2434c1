//! gRPC answers compared by their schema, when the route names a descriptor set: each
//! message decoded as the call's answer type and written as proto3 JSON with the
//! `.proto` field names, so a difference reads `/0/items/2/price` and ignore patterns
//! name fields. An answer that does not decode as that type is compared by field number
//! instead (`protowire.rs`), on both sides alike.

use http::HeaderValue;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};

use super::protowire;
use super::SkipReason;

/// The messages of a gRPC body as one JSON array; `Ok(None)` when one of them is not a
/// `message`.
pub fn json(
    body: &[u8],
    encoding: Option<&HeaderValue>,
    cap: usize,
    message: &MessageDescriptor,
) -> Result<Option<Vec<u8>>, SkipReason> {
    let frames = protowire::frames(body, encoding, cap)?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut out = Vec::with_capacity(body.len() * 2 + 2);
    out.push(b'[');
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Ok(m) = DynamicMessage::decode(message.clone(), &frame[..]) else {
            return Ok(None);
        };
        let mut ser = serde_json::Serializer::new(&mut out);
        if m.serialize_with_options(&mut ser, &options).is_err() {
            return Ok(None);
        }
    }
    out.push(b']');
    Ok(Some(out))
}

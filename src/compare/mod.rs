//! Does the shadow answer like the primary? A pure function over two captured answers:
//! status, the configured headers, and the body (JSON structurally, otherwise bytes),
//! minus what the route ignores and what banyan learned to be noise.
//!
//! Pure and shared: the snapshot carries each route's plan (`plan.rs`), the metrics keep
//! the learned noise (`noise.rs`), the shadow service runs the comparison.
//!
//! - `plan.rs`: what a route mirrors and how its answers are compared; the sampling.
//! - `decode.rs`, `json.rs`, `pattern.rs`: bodies decoded, parsed, and the ignore patterns.
//! - `noise.rs`: differences learned to be noise.

pub mod decode;
pub mod json;
pub mod noise;
pub mod pattern;
pub mod plan;
pub mod protowire;
pub mod schema;
mod skip;

pub use plan::ShadowPlan;
pub use skip::SkipReason;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderName};

use decode::{decode, Decoded};
use json::Json;
use pattern::{pointer_text, OwnedSeg, Patterns, Seg};

/// Values quoted in a difference are cut to this many bytes.
pub const VALUE_PREVIEW: usize = 200;
/// Differences listed per comparison; the rest are only counted.
pub const MAX_DIFFERENCES: usize = 32;

/// One side's answer as captured: the body up to the cap.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// False when the body was longer than the cap and only its start was kept.
    pub complete: bool,
}

/// What a route compares, compiled from its `[route.shadow]`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub compare_headers: Vec<HeaderName>,
    pub ignore_headers: Vec<HeaderName>,
    pub ignore: Patterns,
    /// Bodies (after decoding) larger than this are not compared.
    pub max_body: usize,
    /// A gRPC route's descriptor set, and the answer type of the call being compared.
    pub descriptors: Option<std::sync::Arc<crate::routes::descriptors::Descriptors>>,
    pub message: Option<prost_reflect::MessageDescriptor>,
}

impl Rules {
    /// The rules for one call: with a descriptor set, the call's answer type.
    pub fn for_call(&self, path: &str) -> std::borrow::Cow<'_, Rules> {
        match self.descriptors.as_ref().and_then(|d| d.output_of(path)) {
            None => std::borrow::Cow::Borrowed(self),
            Some(m) => std::borrow::Cow::Owned(Rules {
                message: Some(m),
                ..self.clone()
            }),
        }
    }
}

/// Fields known to differ between two answers of the monolith itself.
#[derive(Debug, Clone, Default)]
pub struct Noise {
    pub status: bool,
    pub headers: Vec<HeaderName>,
    /// A non-JSON body that differs between two legacy answers.
    pub body: bool,
    pub json: Patterns,
}

/// Where two answers differ.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Status,
    Header(String),
    /// A JSON value, by path.
    Json(Vec<OwnedSeg>),
    /// A non-JSON body, or JSON on one side only.
    Body,
}

impl Field {
    /// "status", "header:content-type", "/items/0/price" or "body".
    pub fn name(&self) -> String {
        match self {
            Field::Status => "status".to_string(),
            Field::Header(h) => format!("header:{h}"),
            Field::Json(p) => pointer_text(p),
            Field::Body => "body".to_string(),
        }
    }

    /// The field as noise: array positions generalized, so a per-item timestamp learned
    /// at one position covers every item.
    pub fn as_noise(&self) -> Field {
        match self {
            Field::Json(p) => Field::Json(
                p.iter()
                    .map(|s| match s {
                        OwnedSeg::Index(_) => OwnedSeg::Any,
                        other => other.clone(),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: Field,
    /// Shortened; `None` when the value is absent on that side.
    pub legacy: Option<String>,
    pub shadow: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Match,
    /// The differences listed (at most [`MAX_DIFFERENCES`]) and how many there were.
    Mismatch {
        differences: Vec<Difference>,
        total: usize,
    },
    Skipped(SkipReason),
}

/// Collects differences up to the listing cap, counting all.
#[derive(Default)]
struct Found {
    list: Vec<Difference>,
    total: usize,
}

impl Found {
    fn push(&mut self, field: Field, legacy: Option<String>, shadow: Option<String>) {
        self.total += 1;
        if self.list.len() < MAX_DIFFERENCES {
            self.list.push(Difference {
                field,
                legacy,
                shadow,
            });
        }
    }
}

impl Rules {
    /// Whether the comparison reads a response header: the configured ones, and the two
    /// that decide how bodies are compared. Answers keep only these.
    pub fn reads_header(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(CONTENT_TYPE.as_str())
            || name.eq_ignore_ascii_case(CONTENT_ENCODING.as_str())
            || self
                .compare_headers
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_str()))
    }
}

/// Compares a legacy (primary) answer with a shadow answer. `head` is true for HEAD
/// requests, whose answers carry no body.
pub fn compare(
    legacy: &Answer,
    shadow: &Answer,
    head: bool,
    rules: &Rules,
    noise: &Noise,
) -> Verdict {
    let mut found = Found::default();
    if legacy.status != shadow.status && !noise.status {
        found.push(
            Field::Status,
            Some(legacy.status.to_string()),
            Some(shadow.status.to_string()),
        );
    }
    for name in &rules.compare_headers {
        if rules.ignore_headers.contains(name) || noise.headers.contains(name) {
            continue;
        }
        let l = header_text(&legacy.headers, name);
        let s = header_text(&shadow.headers, name);
        if l != s {
            found.push(Field::Header(name.to_string()), l, s);
        }
    }
    let status = HeaderName::from_static("grpc-status");
    if is_grpc(&legacy.headers) && !rules.ignore_headers.contains(&status) {
        let (l, s) = (
            header_text(&legacy.headers, &status),
            header_text(&shadow.headers, &status),
        );
        if l != s && !noise.headers.contains(&status) {
            found.push(Field::Header(status.to_string()), l, s);
        }
    }
    // Bodies of answers with different statuses say the same thing twice (an error page
    // against a document), so the status difference stands alone.
    let skipped = if legacy.status == shadow.status && has_body(legacy.status, head) {
        compare_bodies(legacy, shadow, rules, noise, &mut found)
    } else {
        None
    };
    match (found.total, skipped) {
        (0, Some(reason)) => Verdict::Skipped(reason),
        (0, None) => Verdict::Match,
        (total, _) => Verdict::Mismatch {
            differences: found.list,
            total,
        },
    }
}

fn has_body(status: u16, head: bool) -> bool {
    !(head || (100..200).contains(&status) || status == 204 || status == 304)
}

/// Header values joined with ", " (so repeated headers compare as a list); `None` when
/// absent.
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let joined = values
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    Some(shorten(&joined))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

/// A gRPC answer: its messages compare by field (`protowire.rs`), its trailers (kept
/// with its headers) by `grpc-status` and the configured names.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .to_ascii_lowercase()
            .starts_with(b"application/grpc")
    })
}

/// How an answer's compressed gRPC messages are compressed.
fn grpc_encoding(a: &Answer) -> Option<&http::HeaderValue> {
    a.headers.get("grpc-encoding")
}

fn compare_bodies(
    legacy: &Answer,
    shadow: &Answer,
    rules: &Rules,
    noise: &Noise,
    found: &mut Found,
) -> Option<SkipReason> {
    if !legacy.complete || !shadow.complete {
        return Some(SkipReason::ResponseTooLarge);
    }
    let enc = |a: &Answer| a.headers.get(CONTENT_ENCODING).cloned();
    // Identical bytes in the same encoding are identical documents: no need to parse.
    if legacy.body == shadow.body && enc(legacy) == enc(shadow) {
        return None;
    }
    let (l, s) = match (
        decoded(legacy, rules.max_body),
        decoded(shadow, rules.max_body),
    ) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(reason), _) | (_, Err(reason)) => return Some(reason),
    };
    if l == s {
        return None;
    }
    if is_grpc(&legacy.headers) && is_grpc(&shadow.headers) {
        let (le, se, cap) = (grpc_encoding(legacy), grpc_encoding(shadow), rules.max_body);
        if let Some(m) = &rules.message {
            let both = match (schema::json(&l, le, cap, m), schema::json(&s, se, cap, m)) {
                (Ok(lj), Ok(sj)) => lj.zip(sj),
                (Err(reason), _) | (_, Err(reason)) => return Some(reason),
            };
            if let Some((lj, sj)) = both {
                if let (Some(lv), Some(sv)) = (json::parse(&lj), json::parse(&sj)) {
                    json_diff(&lv, &sv, &mut Vec::new(), rules, noise, found);
                    return None;
                }
            }
        }
        let (lv, sv) = match (protowire::tree(&l, le, cap), protowire::tree(&s, se, cap)) {
            (Ok(lv), Ok(sv)) => (lv, sv),
            (Err(reason), _) | (_, Err(reason)) => return Some(reason),
        };
        json_diff(&lv, &sv, &mut Vec::new(), rules, noise, found);
        return None;
    }
    if is_json(&legacy.headers) || is_json(&shadow.headers) {
        match (json::parse(&l), json::parse(&s)) {
            (Some(lv), Some(sv)) => {
                let mut path = Vec::new();
                json_diff(&lv, &sv, &mut path, rules, noise, found);
                return None;
            }
            // JSON on one side only: a difference of the whole body, not noise.
            (Some(_), None) | (None, Some(_)) => {
                if !rules.ignore.selects(&[]) {
                    found.push(Field::Body, Some(body_preview(&l)), Some(body_preview(&s)));
                }
                return None;
            }
            (None, None) => {}
        }
    }
    if !noise.body && !rules.ignore.selects(&[]) {
        found.push(Field::Body, Some(body_preview(&l)), Some(body_preview(&s)));
    }
    None
}

/// An answer's body without its content encoding, or why it cannot be compared.
fn decoded(a: &Answer, cap: usize) -> Result<std::borrow::Cow<'_, [u8]>, SkipReason> {
    match decode(a.headers.get(CONTENT_ENCODING), &a.body, cap) {
        Decoded::Body(b) => Ok(b),
        Decoded::TooLarge => Err(SkipReason::ResponseTooLarge),
        Decoded::Unsupported => Err(SkipReason::Encoding),
    }
}

fn skip(path: &[Seg], rules: &Rules, noise: &Noise) -> bool {
    rules.ignore.selects(path) || noise.json.selects(path)
}

fn json_diff<'a>(
    l: &'a Json<'a>,
    s: &'a Json<'a>,
    path: &mut Vec<Seg<'a>>,
    rules: &Rules,
    noise: &Noise,
    found: &mut Found,
) {
    if skip(path, rules, noise) {
        return;
    }
    match (l, s) {
        (Json::Obj(lo), Json::Obj(so)) => {
            // Both sorted by key: one merge pass.
            let (mut i, mut j) = (0, 0);
            while i < lo.len() || j < so.len() {
                let order = match (lo.get(i), so.get(j)) {
                    (Some(a), Some(b)) => a.0.cmp(&b.0),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Equal => {
                        path.push(Seg::Key(&lo[i].0));
                        json_diff(&lo[i].1, &so[j].1, path, rules, noise, found);
                        path.pop();
                        i += 1;
                        j += 1;
                    }
                    std::cmp::Ordering::Less => {
                        path.push(Seg::Key(&lo[i].0));
                        if !skip(path, rules, noise) {
                            found.push(field(path), Some(value_preview(&lo[i].1)), None);
                        }
                        path.pop();
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        path.push(Seg::Key(&so[j].0));
                        if !skip(path, rules, noise) {
                            found.push(field(path), None, Some(value_preview(&so[j].1)));
                        }
                        path.pop();
                        j += 1;
                    }
                }
            }
        }
        (Json::Arr(la), Json::Arr(sa)) => {
            for i in 0..la.len().max(sa.len()) {
                path.push(Seg::Index(i));
                match (la.get(i), sa.get(i)) {
                    (Some(lv), Some(sv)) => json_diff(lv, sv, path, rules, noise, found),
                    (lv, sv) if !skip(path, rules, noise) => {
                        found.push(field(path), lv.map(value_preview), sv.map(value_preview))
                    }
                    _ => {}
                }
                path.pop();
            }
        }
        (Json::Num(a), Json::Num(b)) => {
            if !a.equals(*b) {
                found.push(field(path), Some(value_preview(l)), Some(value_preview(s)));
            }
        }
        _ => {
            if l != s {
                found.push(field(path), Some(value_preview(l)), Some(value_preview(s)));
            }
        }
    }
}

fn field(path: &[Seg]) -> Field {
    Field::Json(path.iter().copied().map(OwnedSeg::from).collect())
}

/// Stops writing after a limit, so previewing a huge subtree costs only the preview.
struct Capped {
    out: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.out.len());
        if room == 0 {
            return Err(std::io::Error::other("preview full"));
        }
        let n = room.min(buf.len());
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compact JSON text of a value, cut to [`VALUE_PREVIEW`] bytes.
pub fn value_preview(v: &Json) -> String {
    let mut w = Capped {
        out: Vec::new(),
        limit: VALUE_PREVIEW + 4,
    };
    // A full buffer ends serialization early; the text so far is the preview.
    let _ = serde_json::to_writer(&mut w, v);
    shorten(&String::from_utf8_lossy(&w.out))
}

/// A body as text for a person, or its size when it is not text.
fn body_preview(body: &[u8]) -> String {
    let head = &body[..body.len().min(VALUE_PREVIEW + 4)];
    match std::str::from_utf8(head) {
        Ok(t) => shorten(t),
        // A multi-byte character cut at the end is still text.
        Err(e) if e.valid_up_to() + 4 > head.len() && e.error_len().is_none() => {
            shorten(&String::from_utf8_lossy(&head[..e.valid_up_to()]))
        }
        Err(_) => format!("({} bytes, not text)", body.len()),
    }
}

/// Cuts text to [`VALUE_PREVIEW`] bytes at a character boundary, marking the cut.
pub fn shorten(text: &str) -> String {
    if text.len() <= VALUE_PREVIEW {
        return text.to_string();
    }
    let mut end = VALUE_PREVIEW;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests;

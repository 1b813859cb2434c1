//! Content decoding before comparison: gzip, deflate and br bodies are compared as the
//! documents they carry, so a monolith that compresses and a service that does not can
//! still match. Output is capped, so a small bomb cannot grow into a large allocation.

use std::borrow::Cow;
use std::io::Read;

use http::HeaderValue;

pub enum Decoded<'a> {
    Body(Cow<'a, [u8]>),
    /// More than the cap once decoded.
    TooLarge,
    /// An encoding banyan does not decode, or a body that is not valid in its encoding.
    Unsupported,
}

/// Decodes `body` per its `Content-Encoding` (one coding, or `identity`).
pub fn decode<'a>(encoding: Option<&HeaderValue>, body: &'a [u8], cap: usize) -> Decoded<'a> {
    let coding = match encoding.map(|v| v.to_str()) {
        None => return Decoded::Body(Cow::Borrowed(body)),
        Some(Ok(c)) => c.trim().to_ascii_lowercase(),
        Some(Err(_)) => return Decoded::Unsupported,
    };
    match coding.as_str() {
        "" | "identity" => Decoded::Body(Cow::Borrowed(body)),
        "gzip" | "x-gzip" => read_capped(flate2::read::MultiGzDecoder::new(body), cap),
        // "deflate" is meant to be zlib-wrapped; some servers send it raw.
        "deflate" => match read_capped(flate2::read::ZlibDecoder::new(body), cap) {
            Decoded::Unsupported => read_capped(flate2::read::DeflateDecoder::new(body), cap),
            other => other,
        },
        "br" => read_capped(brotli::Decompressor::new(body, 8 * 1024), cap),
        _ => Decoded::Unsupported,
    }
}

fn read_capped<'a, R: Read>(reader: R, cap: usize) -> Decoded<'a> {
    let mut out = Vec::new();
    match reader.take(cap as u64 + 1).read_to_end(&mut out) {
        Ok(n) if n > cap => Decoded::TooLarge,
        Ok(_) => Decoded::Body(Cow::Owned(out)),
        Err(_) => Decoded::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn body(d: Decoded) -> Vec<u8> {
        match d {
            Decoded::Body(b) => b.into_owned(),
            Decoded::TooLarge => panic!("too large"),
            Decoded::Unsupported => panic!("unsupported"),
        }
    }

    #[test]
    fn codings_decode_and_are_capped() {
        let doc = br#"{"a":1}"#;
        let hv = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(body(decode(None, doc, 100)), doc);
        assert_eq!(body(decode(Some(&hv("identity")), doc, 100)), doc);
        assert_eq!(body(decode(Some(&hv("GZIP")), &gzip(doc), 100)), doc);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(doc).expect("zlib");
        assert_eq!(
            body(decode(
                Some(&hv("deflate")),
                &z.finish().expect("zlib"),
                100
            )),
            doc
        );
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(doc).expect("br");
        }
        assert_eq!(body(decode(Some(&hv("br")), &br, 100)), doc);
        let big = gzip(&[b'x'; 10_000]);
        assert!(matches!(
            decode(Some(&hv("gzip")), &big, 9_999),
            Decoded::TooLarge
        ));
        assert!(matches!(
            decode(Some(&hv("gzip")), b"not gzip", 100),
            Decoded::Unsupported
        ));
        assert!(matches!(
            decode(Some(&hv("zstd")), doc, 100),
            Decoded::Unsupported
        ));
    }
}

use super::*;

fn req(minor: u8, fields: &[(&'static str, &'static str)]) -> Result<Request<'static>, Refusal> {
    request(minor, fields.iter().map(|(n, v)| (*n, v.as_bytes())))
}

fn resp(
    minor: u8,
    no_body: bool,
    fields: &[(&'static str, &'static str)],
) -> Result<Response, BadFraming> {
    response(
        minor,
        no_body,
        fields.iter().map(|(n, v)| (*n, v.as_bytes())),
    )
}

#[test]
fn requests_are_framed_by_one_length_or_chunked() {
    let h = ("Host", "shop");
    assert_eq!(req(1, &[h]).map(|r| r.body), Ok(Body::None));
    assert_eq!(
        req(1, &[h, ("Content-Length", "0")]).map(|r| r.body),
        Ok(Body::None)
    );
    assert_eq!(
        req(1, &[h, ("content-length", "12")]).map(|r| r.body),
        Ok(Body::Length(12))
    );
    assert_eq!(
        req(1, &[h, ("Transfer-Encoding", "chunked")]).map(|r| r.body),
        Ok(Body::Chunked)
    );
    assert_eq!(
        req(1, &[h, ("Transfer-Encoding", " Chunked ")]).map(|r| r.body),
        Ok(Body::Chunked)
    );
    assert_eq!(
        req(0, &[]).map(|r| (r.body, r.close)),
        Ok((Body::None, true))
    );
    assert_eq!(
        req(0, &[("Connection", "keep-alive")]).map(|r| r.close),
        Ok(false)
    );
    let r = req(1, &[h, ("Connection", "Upgrade"), ("Upgrade", "websocket")]).expect("ok");
    assert!(r.upgrade && !r.close);
    assert!(
        req(1, &[h, ("Expect", "100-continue")])
            .expect("ok")
            .expects
    );
    assert_eq!(
        req(1, &[("Host", "a:8080")]).map(|r| r.host),
        Ok(Some(&b"a:8080"[..]))
    );
}

#[test]
fn ambiguous_requests_are_refused_as_nginx_refuses_them() {
    let h = ("Host", "shop");
    let cases: [(&[(&str, &str)], Refusal); 14] = [
        (
            &[h, ("Content-Length", "5"), ("Content-Length", "5")],
            Refusal::RepeatedLength,
        ),
        (
            &[h, ("Content-Length", "5"), ("Content-Length", "6")],
            Refusal::RepeatedLength,
        ),
        (&[h, ("Content-Length", "5, 5")], Refusal::BadLength),
        (&[h, ("Content-Length", "+5")], Refusal::BadLength),
        (&[h, ("Content-Length", "")], Refusal::BadLength),
        (
            &[h, ("Content-Length", "99999999999999999999")],
            Refusal::BadLength,
        ),
        (
            &[h, ("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
            Refusal::LengthAndEncoding,
        ),
        (
            &[
                h,
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "chunked"),
            ],
            Refusal::RepeatedEncoding,
        ),
        (
            &[h, ("Transfer-Encoding", "gzip, chunked")],
            Refusal::UnknownEncoding,
        ),
        (
            &[h, ("Transfer-Encoding", "chunked, identity")],
            Refusal::UnknownEncoding,
        ),
        (&[("Transfer-Encoding", "chunked")], Refusal::MissingHost),
        (&[h, ("Host", "shop")], Refusal::RepeatedHost),
        (&[("Host", "a b")], Refusal::BadHost),
        (&[("Host", "user@evil")], Refusal::BadHost),
    ];
    for (fields, want) in cases {
        assert_eq!(req(1, fields).err(), Some(want), "{fields:?}");
    }
    assert_eq!(req(1, &[]).err(), Some(Refusal::MissingHost));
    assert_eq!(
        req(0, &[("Transfer-Encoding", "chunked")]).err(),
        Some(Refusal::EncodingInHttp10)
    );
    assert_eq!(Refusal::UnknownEncoding.status(), 501);
    assert_eq!(Refusal::MissingHost.status(), 400);
}

#[test]
fn hosts_are_authorities() {
    for ok in [
        "a",
        "shop.example.com",
        "shop.example.com:8080",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:8080",
        "xn--bcher-kva.example",
    ] {
        assert!(valid_host(ok.as_bytes()), "{ok}");
    }
    for bad in [
        "", ":80", "a/b", "a?b", "a#b", "a@b", "a b", "a\tb", "[::1", "[zz]", "[::1]x", "a:80x",
        "a:123456",
    ] {
        assert!(!valid_host(bad.as_bytes()), "{bad}");
    }
}

#[test]
fn responses_are_framed_strictly() {
    assert_eq!(
        resp(1, false, &[("Content-Length", "3")]).map(|r| r.body),
        Ok(Body::Length(3))
    );
    assert_eq!(
        resp(1, false, &[("Transfer-Encoding", "chunked")]).map(|r| (r.body, r.coded)),
        Ok((Body::Chunked, false))
    );
    assert_eq!(
        resp(1, false, &[("Transfer-Encoding", "gzip, chunked")]).map(|r| (r.body, r.coded)),
        Ok((Body::Chunked, true))
    );
    assert_eq!(
        resp(1, false, &[]).map(|r| (r.body, r.close)),
        Ok((Body::UntilClose, true))
    );
    assert_eq!(
        resp(1, true, &[("Content-Length", "9")]).map(|r| r.body),
        Ok(Body::None)
    );
    assert_eq!(
        resp(0, false, &[("Content-Length", "1")]).map(|r| r.close),
        Ok(true)
    );
    assert_eq!(
        resp(
            0,
            false,
            &[("Content-Length", "1"), ("Connection", "keep-alive")]
        )
        .map(|r| r.close),
        Ok(false)
    );
    let bad: [(&[(&str, &str)], BadFraming); 7] = [
        (
            &[("Content-Length", "3"), ("Content-Length", "3")],
            BadFraming::RepeatedLength,
        ),
        (&[("Content-Length", "3, 3")], BadFraming::BadLength),
        (
            &[("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
            BadFraming::LengthAndEncoding,
        ),
        (&[("Transfer-Encoding", "gzip")], BadFraming::Encoding),
        (
            &[("Transfer-Encoding", "chunked, chunked")],
            BadFraming::Encoding,
        ),
        (
            &[
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "chunked"),
            ],
            BadFraming::Encoding,
        ),
        (
            &[("Transfer-Encoding", "chunked, gzip")],
            BadFraming::Encoding,
        ),
    ];
    for (fields, want) in bad {
        assert_eq!(resp(1, false, fields).err(), Some(want), "{fields:?}");
    }
    assert_eq!(
        resp(0, false, &[("Transfer-Encoding", "chunked")]).err(),
        Some(BadFraming::Encoding)
    );
}

#[test]
fn connection_never_takes_framing_or_host_away() {
    let nominated: [&[u8]; 4] = [b"Content-Length", b"host", b"Transfer-Encoding", b"x-hop"];
    assert!(!hop_by_hop(b"Content-Length", &nominated));
    assert!(!hop_by_hop(b"Host", &nominated));
    assert!(hop_by_hop(b"X-Hop", &nominated));
    assert!(hop_by_hop(b"Keep-Alive", &[]));
    assert!(
        hop_by_hop(b"transfer-encoding", &[]),
        "fixed: written by banyan"
    );
    assert!(!hop_by_hop(b"x-other", &nominated));
}

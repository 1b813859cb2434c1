use super::*;
use crate::http1::framing::BadFraming;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Feeds the request, then `answer` in pieces of `step`.
fn follow(request: &[u8], answer: &[u8], step: usize) -> (Answers, Result<(), Refused>) {
    let mut a = Answers::default();
    a.sent(request);
    for piece in answer.chunks(step.max(1)) {
        if let Err(e) = a.received(piece) {
            return (a, Err(e));
        }
    }
    (a, Ok(()))
}

fn all_steps(request: &[u8], answer: &[u8]) -> Vec<(bool, Result<(), Refused>)> {
    [1, 2, 7, answer.len()]
        .into_iter()
        .map(|step| {
            let (a, r) = follow(request, answer, step);
            (a.between(), r)
        })
        .collect()
}

#[test]
fn answers_are_followed_to_their_end_however_they_are_split() {
    let two = [GET, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"].concat();
    let answers = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n";
    for (between, r) in all_steps(&two, answers) {
        assert_eq!(r, Ok(()));
        assert!(between);
    }
    // An interim answer, then the final one.
    let continued = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    for (between, r) in all_steps(GET, continued) {
        assert_eq!((between, r), (true, Ok(())));
    }
    // A HEAD's answer has no body, whatever its length says.
    let head = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (a, r) = follow(head, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 3);
    assert_eq!((a.between(), r), (true, Ok(())));
    // Mid-body is not between answers.
    let (a, r) = follow(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 100);
    assert_eq!((a.between(), r), (false, Ok(())));
}

#[test]
fn doubtful_framing_is_refused() {
    for (answer, why) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            Refused::Head(BadResponse::Framing(BadFraming::LengthAndEncoding)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            Refused::Head(BadResponse::Framing(BadFraming::RepeatedLength)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            Refused::Head(BadResponse::Framing(BadFraming::Encoding)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\nz\r\n0\r\n\r\n",
            Refused::BadChunk,
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            Refused::Head(BadResponse::Switched),
        ),
    ] {
        for (_, r) in all_steps(GET, answer) {
            assert_eq!(r, Err(why.clone()), "{}", String::from_utf8_lossy(answer));
        }
    }
}

#[test]
fn bytes_no_request_asked_for_are_refused() {
    // Before any request.
    assert_eq!(
        follow(b"", b"HTTP/1.1 200 OK\r\n", 100).1,
        Err(Refused::Unasked)
    );
    // More than the answer: a second answer to one request.
    let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
    for (_, r) in all_steps(GET, extra) {
        assert_eq!(r, Err(Refused::Unasked));
    }
    // A body longer than its length.
    let longer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello";
    assert_eq!(follow(GET, longer, 100).1, Err(Refused::Unasked));
}

#[test]
fn requests_with_bodies_are_noted_once_each() {
    let mut a = Answers::default();
    let post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n";
    a.sent(post);
    // A body that looks like a request head is body.
    a.sent(b"GET ");
    a.received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .expect("answer");
    assert_eq!(
        a.received(b"HTTP/1.1 200 OK\r\n\r\n"),
        Err(Refused::Unasked)
    );
}

#[test]
fn an_asked_switch_ends_the_following() {
    let ask = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let switched = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    for (_, r) in all_steps(ask, switched) {
        assert_eq!(r, Ok(()));
    }
    // Declined: stays HTTP/1.
    let (a, r) = follow(ask, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4);
    assert_eq!((a.between(), r), (true, Ok(())));
}

#[test]
fn until_close_takes_everything_and_heads_are_bounded() {
    let (a, r) = follow(GET, b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 5);
    assert_eq!((a.between(), r), (false, Ok(())));
    let mut long = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
    long.extend_from_slice(b"\r\n");
    for step in [1000, long.len()] {
        let r = follow(GET, &long, step).1;
        assert!(
            matches!(r, Err(Refused::Head(BadResponse::TooLarge(_)))),
            "{r:?}"
        );
    }
}

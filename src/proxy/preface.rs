//! Whether a plain connection opens with HTTP/2's preface (h2c with prior knowledge) or
//! is HTTP/1. Pingora can choose itself, but it waits for 24 bytes (the preface's length)
//! before deciding, so a shorter HTTP/1.0 request (`OPTIONS / HTTP/1.0\r\n\r\n` from a
//! load balancer's health check, say) would hang. Here the first byte that differs from
//! the preface settles it (the first one, for every HTTP/1 method but `PRI`).

use tokio::io::AsyncReadExt;

use super::sock::Sock;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection opens with the HTTP/2 preface; `None` when it closed first.
/// Takes nothing away: what it reads is put back.
pub async fn opens_with_preface(sock: &mut Sock) -> Option<bool> {
    let mut buf = [0u8; 24];
    let n = sock.peek(&mut buf).await.ok()?;
    if n == 0 {
        return None;
    }
    if buf[..n] != H2_PREFACE[..n] {
        return Some(false);
    }
    if n == buf.len() {
        return Some(true);
    }
    // A beginning of the preface and no more yet (rare: a client that sends `P` and
    // waits). Another peek would return at once with the same bytes, so read on instead,
    // and put back what was read.
    let mut got = 0;
    let verdict = loop {
        match sock.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got += n,
        }
        if buf[..got] != H2_PREFACE[..got] {
            break false;
        }
        if got == buf.len() {
            break true;
        }
    };
    sock.rewind(&buf[..got]);
    Some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The preface check decides from the bytes there are, waits (without spinning) on a
    /// beginning of the preface, and leaves every byte for the request's reader.
    #[tokio::test]
    async fn the_preface_check_takes_nothing_away() {
        use tokio::io::AsyncWriteExt;
        for (first, later, h2) in [
            (&b"GET / HTTP/1.1\r\n"[..], &b""[..], false),
            (b"P", b"OST / HTTP/1.1\r\n", false),
            (b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\nframes", true),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"", true),
        ] {
            let (mut sock, mut client) = Sock::loopback().await;
            client.write_all(first).await.expect("write");
            let check = tokio::spawn(async move {
                let verdict = opens_with_preface(&mut sock).await;
                (verdict, sock)
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(later).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let (verdict, mut sock) = check.await.expect("task");
            assert_eq!(verdict, Some(h2), "{first:?}");
            let mut all = Vec::new();
            sock.read_to_end(&mut all).await.expect("read");
            assert_eq!(all, [first, later].concat(), "{first:?}");
        }
        let (mut sock, client) = Sock::loopback().await;
        drop(client);
        assert_eq!(opens_with_preface(&mut sock).await, None);
    }
}

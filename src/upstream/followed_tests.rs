use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

async fn pair(listener: &TcpListener, home: &Arc<IdlePool<Conn>>) -> (Followed, TcpStream) {
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (
        Followed::new(Conn::Plain(client), false, Some(home.clone())),
        server,
    )
}

/// Reads until the read fails or `want` bytes came.
async fn read_all(f: &mut Followed, want: usize) -> Result<Vec<u8>, std::io::Error> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

#[tokio::test]
async fn a_whole_exchange_is_kept_and_a_refused_one_is_not() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let home = Arc::new(IdlePool::new(Duration::from_secs(60)));

    let (mut f, mut server) = pair(&listener, &home).await;
    f.write_all(GET).await.expect("write");
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    server.write_all(answer).await.expect("answer");
    assert_eq!(read_all(&mut f, answer.len()).await.expect("read"), answer);
    // Pingora's test before pooling it: "closed", so that Pingora's pool never holds it.
    assert_eq!(f.read(&mut [0u8; 8]).await.expect("read"), 0);
    drop(f);
    assert_eq!(home.len(), 1, "kept between answers");
    let kept = home.take().expect("still open");

    // The same connection, reused: an answer with a length beside chunked is refused,
    // nothing of it read, and the connection is not kept.
    let mut f = Followed::new(kept, true, Some(home.clone()));
    f.write_all(GET).await.expect("write");
    server
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await
        .expect("answer");
    let e = read_all(&mut f, 1).await.expect_err("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    let wrapped = pingora::Error::because(ErrorType::ReadError, "reading the answer", e);
    assert!(matches!(
        io_cause::<AnswerRefused>(&wrapped),
        Some(AnswerRefused(Refused::Head(_)))
    ));
    assert!(f.read(&mut [0u8; 8]).await.is_err(), "stays failed");
    drop(f);
    assert!(home.is_empty(), "a refused connection is dropped");

    // Mid-answer: not kept either.
    let (mut f, mut server) = pair(&listener, &home).await;
    f.write_all(GET).await.expect("write");
    server
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        .await
        .expect("answer");
    read_all(&mut f, 40).await.expect("read");
    drop(f);
    assert!(home.is_empty(), "an unfinished answer is not kept");
}

#[tokio::test]
async fn a_kept_connection_closed_meanwhile_fails_as_stale() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let home = Arc::new(IdlePool::new(Duration::from_secs(60)));
    let (client, server) = {
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    };
    let mut f = Followed::new(Conn::Plain(client), true, Some(home.clone()));
    f.write_all(GET).await.expect("write");
    drop(server);
    let e = read_all(&mut f, 1).await.expect_err("closed");
    let wrapped = pingora::Error::because(ErrorType::ReadError, "reading the answer", e);
    assert_eq!(io_cause::<Stale>(&wrapped), Some(&Stale));
    drop(f);
    assert!(home.is_empty());
}

#[tokio::test]
async fn an_answer_that_says_close_is_not_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let home = Arc::new(IdlePool::new(Duration::from_secs(60)));
    let (mut f, mut server) = pair(&listener, &home).await;
    f.write_all(GET).await.expect("write");
    let answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
    server.write_all(answer).await.expect("answer");
    read_all(&mut f, answer.len()).await.expect("read");
    drop(f);
    assert!(home.is_empty());
}

#[tokio::test]
async fn connections_to_another_address_are_never_kept_for_this_peer() {
    // A health check connects through the first peer's connector to every peer.
    let own = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let other = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let own_addr = own.local_addr().expect("addr");
    let connector = Connector::new(
        own_addr,
        Duration::from_secs(1),
        Duration::from_secs(60),
        None,
    );
    let to = |a: std::net::SocketAddr| pingora::protocols::l4::socket::SocketAddr::Inet(a);
    let mut s = connector
        .connect(&to(other.local_addr().expect("addr")))
        .await
        .expect("connect");
    let (mut server, _) = other.accept().await.expect("accept");
    s.write_all(GET).await.expect("write");
    server
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await
        .expect("answer");
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf).await.expect("read");
    drop(s);
    assert!(connector.kept.is_empty(), "not kept for the peer");
    // Its own address: kept.
    let mut s = connector.connect(&to(own_addr)).await.expect("connect");
    let (mut server, _) = own.accept().await.expect("accept");
    s.write_all(GET).await.expect("write");
    server
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await
        .expect("answer");
    let _ = s.read(&mut buf).await.expect("read");
    drop(s);
    assert_eq!(connector.kept.len(), 1);
}

//! A plain client connection as banyan holds it: the socket, the client's address, and the
//! bytes put back for Pingora to read again. Pingora's own stream type boxes itself and
//! keeps a socket digest, timing and tracing state (about 900 bytes beside the socket's
//! registration); an idle keep-alive client should cost its socket and little else. Pingora
//! reads a `Sock` as any other stream (it implements Pingora's `IO`), so a request handed
//! over and the connection handed back move the same socket, with no system call.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub struct Sock {
    tcp: TcpStream,
    peer: SocketAddr,
    /// Bytes already read that the next reads give again (a request banyan read, then
    /// handed to Pingora). Rare, so boxed; empty once read.
    rewound: Option<Box<Rewound>>,
    /// Made when Pingora first asks for it during a request, dropped when the connection
    /// comes back: an idle connection does not hold it.
    digest: OnceLock<Arc<SocketDigest>>,
}

struct Rewound {
    bytes: Vec<u8>,
    at: usize,
}

impl Sock {
    pub fn new(tcp: TcpStream, peer: SocketAddr) -> Self {
        Sock {
            tcp,
            peer,
            rewound: None,
            digest: OnceLock::new(),
        }
    }

    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// The next reads give `data` before anything from the socket.
    pub fn rewind(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut bytes = match self.rewound.take() {
            Some(r) => r.bytes[r.at..].to_vec(),
            None => Vec::new(),
        };
        bytes.splice(0..0, data.iter().copied());
        self.rewound = Some(Box::new(Rewound { bytes, at: 0 }));
    }

    /// A connection over loopback: the server's end, and the client's.
    #[cfg(test)]
    pub async fn loopback() -> (Sock, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        (Sock::new(server, peer), client)
    }

    /// Lets go of what only a request Pingora served needed.
    pub fn back_from_pingora(&mut self) {
        self.digest = OnceLock::new();
    }

    /// Peeks at what the client sent, without reading it: as many bytes as are there, once
    /// any are (a second peek returns at once with the same bytes).
    pub async fn peek(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(r) = &self.rewound {
            let rest = &r.bytes[r.at..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            return Ok(n);
        }
        self.tcp.peek(buf).await
    }
}

impl std::fmt::Debug for Sock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sock")
            .field("fd", &self.tcp.as_raw_fd())
            .field("peer", &self.peer)
            .finish()
    }
}

impl AsyncRead for Sock {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(r) = &mut this.rewound {
            let rest = &r.bytes[r.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            r.at += n;
            if r.at >= r.bytes.len() {
                this.rewound = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sock {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Sock {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.tcp).await;
    }
}

impl UniqueID for Sock {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for Sock {}

impl GetTimingDigest for Sock {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Sock {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Sock {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        let digest = self.digest.get_or_init(|| {
            let d = SocketDigest::from_raw_fd(self.tcp.as_raw_fd());
            let _ = d.peer_addr.set(Some(PingoraAddr::Inet(self.peer)));
            Arc::new(d)
        });
        Some(Arc::clone(digest))
    }
}

#[async_trait]
impl Peek for Sock {
    /// As Pingora's own streams do: waits until `buf` can be filled, then puts it back.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        use tokio::io::AsyncReadExt;
        self.read_exact(buf).await?;
        self.rewind(buf);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn rewound_bytes_are_read_first_then_the_socket() {
        let (mut sock, mut client) = Sock::loopback().await;
        client.write_all(b"rest").await.expect("write");
        sock.rewind(b"two ");
        sock.rewind(b"one ");
        let mut peeked = [0u8; 3];
        assert_eq!(sock.peek(&mut peeked).await.expect("peek"), 3);
        assert_eq!(&peeked, b"one");
        let mut got = vec![0u8; 12];
        sock.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"one two rest");
        assert!(sock.rewound.is_none());
    }

    #[tokio::test]
    async fn pingora_sees_the_client_address_without_asking_the_kernel() {
        let (mut sock, client) = Sock::loopback().await;
        let local = client.local_addr().expect("addr");
        let digest = sock.get_socket_digest().expect("digest");
        let peer = digest.peer_addr().and_then(|a| a.as_inet().copied());
        assert_eq!(peer, Some(local));
        assert_eq!(sock.peer_ip(), local.ip());
        sock.back_from_pingora();
        assert!(sock.digest.get().is_none());
        assert!(format!("{sock:?}").contains("Sock"));
    }
}

//! A real gRPC server (tonic, HTTP/2 with prior knowledge) for the gRPC tests, serving
//! the test service of `greeter.rs`, and a client through banyan.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tonic::codegen::http;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

pub use super::greeter::{Greeter, Hello, Reply, COUNT, SAY_HELLO};

/// A gRPC server on a loopback port, stopped when dropped.
pub struct GrpcServer {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    /// Answers every call, naming itself `name` in each reply.
    pub fn start(name: &'static str) -> GrpcServer {
        Self::serve(name, false, false)
    }

    /// Fails every call with UNAVAILABLE.
    pub fn unavailable(name: &'static str) -> GrpcServer {
        Self::serve(name, true, false)
    }

    /// Answers with gzip-compressed messages.
    pub fn compressing(name: &'static str) -> GrpcServer {
        Self::serve(name, false, true)
    }

    fn serve(name: &'static str, unavailable: bool, compress: bool) -> GrpcServer {
        let listener = super::bind_loopback();
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let greeter = Greeter {
            name,
            unavailable,
            compress,
            hits: Arc::clone(&hits),
        };
        let task = super::upstream::RUNTIME.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(greeter)
                .serve_with_incoming(incoming)
                .await;
        });
        GrpcServer { addr, hits, task }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client on one HTTP/2 connection to `addr` (banyan's plain listener, h2c).
pub struct GrpcClient {
    rt: tokio::runtime::Runtime,
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

/// How a call ended: its replies, then its status (code, message, `x-detail` metadata).
#[derive(Debug)]
pub struct Ended {
    pub replies: Vec<Reply>,
    pub code: Code,
    pub message: String,
    pub detail: Option<String>,
}

fn ended(replies: Vec<Reply>, s: Status) -> Ended {
    Ended {
        replies,
        code: s.code(),
        message: s.message().to_string(),
        detail: s
            .metadata()
            .get("x-detail")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

impl GrpcClient {
    pub fn connect(addr: SocketAddr) -> GrpcClient {
        Self::connect_with(addr, false)
    }

    /// Sends its messages gzip-compressed, and takes compressed answers.
    pub fn connect_compressed(addr: SocketAddr) -> GrpcClient {
        Self::connect_with(addr, true)
    }

    fn connect_with(addr: SocketAddr, compressed: bool) -> GrpcClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("endpoint")
                    .connect(),
            )
            .expect("connect through banyan");
        let mut grpc = tonic::client::Grpc::new(channel);
        if compressed {
            let gzip = tonic::codec::CompressionEncoding::Gzip;
            grpc = grpc.send_compressed(gzip).accept_compressed(gzip);
        }
        GrpcClient { rt, grpc }
    }

    fn request(name: &str, user: Option<&str>) -> tonic::Request<Hello> {
        let mut req = tonic::Request::new(Hello {
            name: name.to_string(),
        });
        if let Some(u) = user {
            if let Ok(v) = u.parse() {
                req.metadata_mut().insert("x-user-id", v);
            }
        }
        req
    }

    /// `SayHello(name)` as `user` (the `x-user-id` metadata).
    pub fn say_hello(&mut self, name: &str, user: Option<&str>) -> Ended {
        self.say_hello_within(name, user, None)
    }

    /// `SayHello(name)` with a `grpc-timeout` (which tonic's client sends but leaves to
    /// the other side to keep).
    pub fn say_hello_within(
        &mut self,
        name: &str,
        user: Option<&str>,
        timeout: Option<std::time::Duration>,
    ) -> Ended {
        let grpc = &mut self.grpc;
        let mut req = Self::request(name, user);
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        self.rt.block_on(async {
            grpc.ready().await.expect("ready");
            let path = http::uri::PathAndQuery::from_static(SAY_HELLO);
            let codec = ProstCodec::<Hello, Reply>::default();
            match grpc.unary(req, path, codec).await {
                Ok(r) => ended(vec![r.into_inner()], Status::ok("")),
                Err(s) => ended(Vec::new(), s),
            }
        })
    }

    /// `Count(name)`: every reply, then how the stream ended.
    pub fn count(&mut self, name: &str, user: Option<&str>) -> Ended {
        let grpc = &mut self.grpc;
        self.rt.block_on(async {
            grpc.ready().await.expect("ready");
            let path = http::uri::PathAndQuery::from_static(COUNT);
            let codec = ProstCodec::<Hello, Reply>::default();
            let mut stream = match grpc
                .server_streaming(Self::request(name, user), path, codec)
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => return ended(Vec::new(), s),
            };
            let mut replies = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(r)) => replies.push(r),
                    Ok(None) => return ended(replies, Status::ok("")),
                    Err(s) => return ended(replies, s),
                }
            }
        })
    }
}

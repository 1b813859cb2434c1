//! The test gRPC service (tonic), shared by the gRPC tests (`grpc.rs`) and the gRPC
//! benchmark's peer (`examples/grpc_peer.rs`). Written out as tonic's code generator would
//! write it, over two hand-derived prost messages, so no `.proto` compiler is needed:
//!
//! ```proto
//! package test;
//! message Hello { string name = 1; }
//! message Reply { string message = 1; string upstream = 2; uint64 serial = 3; }
//! service Greeter {
//!   rpc SayHello(Hello) returns (Reply);            // UNAVAILABLE for a name "fail"
//!   rpc Count(Hello) returns (stream Reply);        // three replies; "fail": one, then
//!                                                   // UNAVAILABLE with `x-detail`
//! }
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub upstream: String,
    /// This server's count of calls: different in every answer.
    #[prost(uint64, tag = "3")]
    pub serial: u64,
}

pub const SAY_HELLO: &str = "/test.Greeter/SayHello";
pub const COUNT: &str = "/test.Greeter/Count";

#[derive(Clone)]
pub struct Greeter {
    pub name: &'static str,
    /// Every call fails with UNAVAILABLE.
    pub unavailable: bool,
    /// Answers with gzip-compressed messages (to clients that accept them).
    pub compress: bool,
    pub hits: Arc<AtomicU64>,
}

impl Greeter {
    fn grpc(&self) -> tonic::server::Grpc<ProstCodec<Reply, Hello>> {
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        let grpc =
            tonic::server::Grpc::new(ProstCodec::<Reply, Hello>::default()).accept_compressed(gzip);
        if self.compress {
            grpc.send_compressed(gzip)
        } else {
            grpc
        }
    }

    fn fails(&self, req: &Hello) -> bool {
        self.unavailable || req.name == "fail"
    }

    fn reply(&self, req: &Hello, i: usize) -> Reply {
        Reply {
            message: format!("hello {} #{i}", req.name),
            upstream: self.name.to_string(),
            serial: self.hits.load(Ordering::Relaxed),
        }
    }
}

fn unavailable(why: &str) -> Status {
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert(
        "x-detail",
        MetadataValue::from_static("the greeter is away"),
    );
    Status::with_metadata(Code::Unavailable, why, md)
}

type Replies = Pin<Box<dyn tokio_stream::Stream<Item = Result<Reply, Status>> + Send>>;

struct SayHello(Greeter);

impl tonic::server::UnaryService<Hello> for SayHello {
    type Response = Reply;
    type Future = BoxFuture<tonic::Response<Reply>, Status>;
    fn call(&mut self, request: tonic::Request<Hello>) -> Self::Future {
        let g = self.0.clone();
        Box::pin(async move {
            let req = request.into_inner();
            if g.fails(&req) {
                return Err(unavailable("asked to fail"));
            }
            Ok(tonic::Response::new(g.reply(&req, 0)))
        })
    }
}

struct Count(Greeter);

impl tonic::server::ServerStreamingService<Hello> for Count {
    type Response = Reply;
    type ResponseStream = Replies;
    type Future = BoxFuture<tonic::Response<Replies>, Status>;
    fn call(&mut self, request: tonic::Request<Hello>) -> Self::Future {
        let g = self.0.clone();
        Box::pin(async move {
            let req = request.into_inner();
            let items: Vec<Result<Reply, Status>> = if g.fails(&req) {
                vec![Ok(g.reply(&req, 0)), Err(unavailable("gave up midway"))]
            } else {
                (0..3).map(|i| Ok(g.reply(&req, i))).collect()
            };
            let stream: Replies = Box::pin(tokio_stream::iter(items));
            Ok(tonic::Response::new(stream))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.hits.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        match req.uri().path() {
            SAY_HELLO => Box::pin(async move {
                let mut grpc = me.grpc();
                Ok(grpc.unary(SayHello(me), req).await)
            }),
            COUNT => Box::pin(async move {
                let mut grpc = me.grpc();
                Ok(grpc.server_streaming(Count(me), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = "test.Greeter";
}

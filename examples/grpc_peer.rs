//! The gRPC benchmark's peer (`benches/grpc.sh`): the tests' Greeter service (tonic,
//! h2c) on one address, answering every call.
//!
//!   cargo run --release --example grpc_peer -- 127.0.0.1:18881 NAME

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

#[path = "../tests/common/greeter.rs"]
mod greeter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args.next().ok_or("usage: grpc_peer ADDR [NAME]")?.parse()?;
    let name: &'static str = Box::leak(
        args.next()
            .unwrap_or_else(|| "peer".into())
            .into_boxed_str(),
    );
    let greeter = greeter::Greeter {
        name,
        unavailable: false,
        compress: false,
        hits: Arc::new(AtomicU64::new(0)),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            tonic::transport::Server::builder()
                .add_service(greeter)
                .serve_with_shutdown(addr, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
        })?;
    Ok(())
}

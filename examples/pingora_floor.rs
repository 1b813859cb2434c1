//! The least possible Pingora proxy, as a reference floor for `benches/load.sh`: one
//! fixed upstream, no routing, no headers, no metrics; the same allocator and runtime
//! settings as banyan's defaults. What banyan costs above this is banyan's own work.
//!
//!   cargo run --release --example pingora_floor -- 127.0.0.1:18380 127.0.0.1:18181

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor(HttpPeer);

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.0.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: pingora_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<std::net::SocketAddr>() else {
        eprintln!("the upstream must be an address like 127.0.0.1:8081");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(
        &server.configuration,
        Floor(HttpPeer::new(upstream, false, String::new())),
    );
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run(pingora::server::RunArgs::default());
}

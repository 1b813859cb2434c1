//! `banyan run` and `banyan demo`: load, then serve the proxy and the admin API (and, for
//! the demo, the demo upstreams) on one Pingora server until a signal.
//!
//! Signals: SIGINT stops at once; SIGTERM stops accepting, lets requests in flight finish
//! for `server.grace_period`, then gives runtimes `server.shutdown_timeout` (both 1 s by
//! default, rounded up to whole seconds, as Pingora counts them); SIGQUIT hands the
//! listening sockets to a new process started with `--upgrade`.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use super::common::{cwd, print_report, refuse};
use crate::admin::AdminApp;
use crate::config::Config;
use crate::control::service::ControlService;
use crate::control::Control;
use crate::demo::DemoUpstream;
use crate::metrics::Metrics;
use crate::proxy::accept::PlainListeners;
use crate::proxy::access_log::AccessLog;
use crate::proxy::listener::PlainOrH2c;
use crate::proxy::Proxy;
use crate::shadow::{ShadowShared, Shadower};
use crate::upstream::checks::HealthChecks;

/// SIGHUP means "reload" to banyan, but its default action ends the process. Until the
/// control service handles it, ignore it: a reload asked for that early finds nothing
/// new, and the service re-reads any file that changed before it watched them.
fn ignore_sighup_until_handled() {
    // SAFETY: installs SIG_IGN, which has no handler code; done before any thread that
    // could race on the signal disposition is started.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Pingora panics inside a task when a listener cannot bind and keeps running without it;
/// finding out here turns that into a clear error at start.
fn ensure_bindable(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// Demo upstreams: one per upstream whose peers are all on this machine.
fn demo_upstreams(config: &Config) -> Vec<(String, SocketAddr)> {
    config
        .upstreams
        .values()
        .filter(|u| u.peers.iter().all(|p| p.addr.ip().is_loopback()))
        .flat_map(|u| u.peers.iter().map(move |p| (u.name.clone(), p.addr)))
        .collect()
}

pub fn run(
    config_path: &Path,
    demo: bool,
    log_format: crate::logging::Format,
) -> anyhow::Result<ExitCode> {
    crate::logging::init(log_format);
    ignore_sighup_until_handled();
    if let Some(limit) = crate::rlimit::raise_open_files() {
        tracing::debug!("open files: up to {limit}");
    }
    let (config, report) = match Config::load(config_path, &cwd()) {
        Ok(loaded) => loaded,
        Err(report) => return Err(refuse(&report, "not starting")),
    };
    print_report(&report);
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new().context("creating the metrics registry")?);
    let (control, report) = match Control::start(Arc::clone(&config), Arc::clone(&metrics)) {
        Ok(started) => started,
        Err(report) => return Err(refuse(&report, "not starting")),
    };
    print_report(&report);
    let control = Arc::new(control);
    let tokens = crate::admin::tokens::Tokens::new(config.admin_tokens()?);

    // Plain listeners are bound here, so that a taken port stops the start.
    let plain = config
        .server
        .listen
        .iter()
        .map(|addr| crate::proxy::accept::bind(*addr, "proxy"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(tls) = &config.server.tls {
        ensure_bindable(tls.listen, "HTTPS proxy listener")?;
    }
    ensure_bindable(config.admin.listen, "admin API")?;
    let demos = if demo {
        demo_upstreams(&config)
    } else {
        Vec::new()
    };
    if demo && demos.is_empty() {
        bail!(
            "no upstream in {} has loopback peers to run a demo upstream on",
            config.file.display()
        );
    }
    for (name, addr) in &demos {
        ensure_bindable(*addr, &format!("demo upstream `{name}`"))?;
    }

    let mut conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        grace_period_seconds: Some(whole_seconds(config.server.grace_period)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds(config.server.shutdown_timeout)),
        ..ServerConf::default()
    };
    // Pingora's own retry budget; banyan decides retries itself in fail_to_connect.
    conf.max_retries = crate::proxy::flow::attempt::MAX_ATTEMPTS;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let shadower = Arc::new(
        Shadower::new(
            ShadowShared::new(config.shadow.clone(), &config.server.state_dir),
            Arc::clone(&metrics),
        )
        .map_err(|e| anyhow::anyhow!("cannot start the shadow worker: {e}"))?,
    );
    let access_log = Arc::new(AccessLog::start(
        &config.server.access_log,
        metrics.access_log_dropped_total.clone(),
    )?);
    let proxy = Proxy::new(
        Arc::clone(&control.shared),
        Arc::clone(&metrics),
        Arc::clone(&shadower),
        access_log,
        config.server.debug_headers,
        config.server.limits,
        config.server.fast_path,
    );
    // Plain listeners take HTTP/1.1 and h2c with prior knowledge on the same port.
    let app = Arc::new(PlainOrH2c::new(
        proxy.clone(),
        pingora::proxy::http_proxy(&server.configuration, proxy.clone()),
        pingora::proxy::http_proxy(&server.configuration, proxy),
        config.server.limits,
        Arc::clone(&metrics),
    ));
    // Plain listeners are accepted by banyan's own threads; the TLS listener by Pingora's.
    server.add_service(PlainListeners::new(
        Arc::clone(&app),
        plain,
        config.server.threads,
    ));
    if let (Some(tls), Some(resolver)) = (&config.server.tls, &control.certificate) {
        let mut proxy_service = Service::new("banyan proxy".to_string(), (*app).clone());
        // A resolver, not files: Pingora would panic on unreadable files at start, and
        // the resolver takes a renewed certificate without a restart.
        let mut settings = TlsSettings::intermediate("", "")
            .map_err(|e| anyhow::anyhow!("TLS listener settings: {e}"))?;
        settings
            .set_cert_resolver(Arc::clone(resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
        settings.enable_h2();
        proxy_service.add_listener(
            ListenerConfig::tcp(tls.listen.to_string())
                .tls(settings)
                .l4_buffer(client_buffers()),
        );
        server.add_service(proxy_service);
    }

    let admin = AdminApp::new(
        Arc::clone(&control),
        shadower.shared(),
        tokens,
        config.admin.listen,
    );
    let mut admin_service = Service::new("banyan admin".to_string(), admin);
    admin_service.add_tcp(&config.admin.listen.to_string());
    admin_service.threads = Some(1);
    server.add_service(admin_service);

    server.add_service(pingora::services::background::background_service(
        "banyan control",
        ControlService::new(Arc::clone(&control)),
    ));

    if HealthChecks::any(&control.upstreams) {
        server.add_service(pingora::services::background::background_service(
            "banyan health checks",
            HealthChecks::new(Arc::clone(&control.upstreams)),
        ));
    }

    for (name, addr) in &demos {
        let mut svc = Service::new(format!("demo {name}"), DemoUpstream::new(name));
        svc.add_tcp(&addr.to_string());
        svc.threads = Some(1);
        server.add_service(svc);
    }

    let snap = control.snapshot();
    let listen: Vec<String> = config
        .server
        .listen
        .iter()
        .map(|a| format!("http://{a}"))
        .chain(
            config
                .server
                .tls
                .iter()
                .map(|t| format!("https://{}", t.listen)),
        )
        .collect();
    tracing::info!(
        routes = snap.routes.len(),
        generation = snap.generation,
        "banyan serving on {}; admin on http://{}",
        listen.join(", "),
        config.admin.listen
    );
    if demo {
        print_demo_banner(&config, &demos);
    }
    server.run(RunArgs::default());
    Ok(ExitCode::SUCCESS)
}

fn print_demo_banner(config: &Config, demos: &[(String, SocketAddr)]) {
    let proxy = config
        .server
        .listen
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let ups: Vec<String> = demos.iter().map(|(n, a)| format!("{n} on {a}")).collect();
    println!(
        "\nbanyan demo: proxy on http://{proxy}, admin on http://{admin}\n  demo upstreams: {ups}\n\ntry:\n  curl -s http://{proxy}/api/orders/42 -H 'x-user-id: alice'\n  curl -s http://{proxy}/api/users/7\n  curl -s http://{admin}/api/v1/status\n  cargo run --release -- explain GET http://{proxy}/api/orders/42 -H 'x-user-id: alice'\n\nCtrl-C stops everything.\n",
        admin = config.admin.listen,
        ups = ups.join(", "),
    );
}

/// Client connections read straight into Pingora's request buffer: its default 64 KiB read
/// buffer per connection would be copied through on every read and held by every idle
/// keep-alive connection (1,000 idle clients: 150 MiB with it). Writes keep Pingora's
/// small coalescing buffer.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

//! `banyan explain METHOD URL [-H 'name: value']...`: the route, the bucket and the side a
//! request gets. Asks the running proxy (`GET /api/v1/explain`), whose answer is the data
//! path's own decision on the snapshot it serves: overrides, guard trips, health and
//! circuits included. `--offline` compiles a snapshot from the files and `overrides.json`
//! and answers with the same function, saying that live state may differ.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::client::{find_config, Admin, AdminArgs, CallError};
use super::common::{load_all, refuse, shown};
use crate::admin::explain::{explain as decide, route_methods, Explanation, Query};
use crate::routes::split::BUCKETS;

#[derive(clap::Args)]
pub struct Args {
    /// HTTP method, e.g. GET.
    method: String,
    /// A URL ("http://shop.example.com/api/orders/7") or a path ("/api/orders/7").
    url: String,
    /// A request header, as curl writes it: -H 'x-user-id: alice'. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The client address, for routes sticky by "ip" and rate limits.
    #[arg(long, value_name = "IP")]
    client_ip: Option<IpAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Explain from the config, route files and overrides.json, without asking the proxy.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

pub fn explain(args: &Args) -> anyhow::Result<ExitCode> {
    let method = args.method.to_ascii_uppercase();
    let ip = args.client_ip.map(|i| i.to_string());
    let (answer, at) = if args.offline {
        (offline(args, &method, ip.as_deref())?, None)
    } else {
        // Checked here too, so a typo is not blamed on the proxy.
        Query::new(&method, &args.url, &args.headers, ip.as_deref(), &[&method])?;
        let admin = Admin::new(&args.admin)?;
        let mut query: Vec<(&str, &str)> = vec![("method", &method), ("url", &args.url)];
        query.extend(args.headers.iter().map(|h| ("header", h.as_str())));
        if let Some(ip) = &ip {
            query.push(("client_ip", ip));
        }
        let path = format!(
            "/api/v1/explain?{}",
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish()
        );
        match admin.call("GET", &path, None) {
            Ok(v) => (
                serde_json::from_value(v).context("reading the proxy's explanation")?,
                Some(admin.url.clone()),
            ),
            Err(e @ CallError::Unreachable { .. }) => {
                bail!("{e}; `banyan explain --offline` explains from the files instead")
            }
            Err(e) => bail!("{e}"),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_text(&answer, at.as_deref());
    }
    Ok(ExitCode::SUCCESS)
}

fn offline(args: &Args, method: &str, ip: Option<&str>) -> anyhow::Result<Explanation> {
    let config = find_config(args.admin.config.as_deref())?.ok_or_else(|| {
        anyhow::anyhow!(
            "no config file here ({}): pass --config or set BANYAN_CONFIG",
            crate::config::DEFAULT_CONFIG_PATH
        )
    })?;
    let (config, set, _) = match load_all(&config) {
        Ok(loaded) => loaded,
        Err(report) => return Err(refuse(&report, "cannot explain")),
    };
    let (snap, note) = crate::control::build::offline(&config, &set)?;
    let q = Query::new(method, &args.url, &args.headers, ip, &route_methods(&snap))?;
    let mut answer = decide(&snap, &q, false);
    answer.notes.extend(note);
    Ok(answer)
}

fn print_text(e: &Explanation, at: Option<&str>) {
    match at {
        Some(url) => println!(
            "answered  by the proxy at {url} (snapshot {}, generation {})",
            e.snapshot, e.generation
        ),
        None => println!("answered  from the files (--offline): overrides in force may differ"),
    }
    println!("request   {} {}", e.method, e.url);
    let Some(source) = &e.source else {
        println!("route     {}  (no route matched)", e.route);
        print_backend(e);
        print_notes(e);
        return;
    };
    let (file, line) = source.rsplit_once(':').unwrap_or((source, ""));
    println!(
        "route     {}  ({}:{line})",
        e.route,
        shown(std::path::Path::new(file))
    );
    if let Some(m) = &e.matcher {
        println!("match     {m}");
    }
    let pct = |p: Option<f64>| format!("{:.2}", p.unwrap_or(0.0));
    match &e.target {
        Some(t) => println!(
            "split     {}% to target `{t}`, sticky {}, salt \"{}\"",
            pct(e.percent),
            e.sticky.as_deref().unwrap_or("none"),
            e.salt.as_deref().unwrap_or("")
        ),
        None => println!("split     none: the route has no target"),
    }
    if let Some(o) = &e.override_ {
        let age = o.age_seconds.map_or(String::new(), |s| {
            format!(", {}", super::status::age(Some(s)))
        });
        println!(
            "override  {}% instead of the files' {}% ({}{age}: {}){}",
            pct(Some(o.percent)),
            pct(e.declared_percent),
            o.trigger,
            o.reason,
            if o.shadow { "" } else { ", shadow paused" }
        );
    }
    match (&e.key, e.bucket) {
        (Some(k), Some(b)) => {
            println!(
                "key       {} = \"{k}\"",
                e.key_from.as_deref().unwrap_or("")
            );
            let bp = (e.percent.unwrap_or(0.0) * 100.0).round();
            println!(
                "bucket    {b} of {BUCKETS}  (target when bucket < {bp} = {}% × 100)",
                pct(e.percent)
            );
        }
        _ if e.target.is_some() => {
            let why = match e.key_from.as_deref() {
                Some("none") | None => "the route is not sticky".to_string(),
                Some("client ip") => "no --client-ip given".to_string(),
                Some(from) => format!("the request has no {from}"),
            };
            println!(
                "key       none ({why}): each request is split at random, {}% to target",
                pct(e.percent)
            );
        }
        _ => {}
    }
    if let Some(c) = &e.cohort {
        println!("cohort    {c}  (forced, whatever the percent)");
    }
    print_backend(e);
    print_notes(e);
}

fn print_backend(e: &Explanation) {
    let peers = e
        .peers
        .iter()
        .map(|p| match p.healthy {
            Some(false) => format!("{} out of rotation", p.peer),
            _ => p.peer.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(reason) = &e.fallback {
        println!(
            "target    {} cannot take requests ({}; circuit {})",
            e.target.as_deref().unwrap_or("?"),
            reason.replace('_', " "),
            e.circuit
        );
    } else if e.circuit == "probe" {
        println!("target    circuit half open: the next target-bound request is its trial");
    }
    match e.backend.as_str() {
        "refused" => println!("backend   none: banyan answers 503 itself"),
        "random" => println!(
            "backend   random per request: target → {} {}%, else legacy → {}",
            e.target.as_deref().unwrap_or("?"),
            format_args!("{:.2}", e.percent.unwrap_or(0.0)),
            e.legacy
        ),
        side => println!(
            "backend   {side} → {} ({peers}){}",
            e.upstream.as_deref().unwrap_or("?"),
            if e.fallback.is_some() && side == "legacy" {
                "  (fallback)"
            } else {
                ""
            }
        ),
    }
    if let Some(s) = &e.shadow {
        println!("shadow    {s}");
    }
    if let Some(r) = &e.rate_limit {
        println!("limit     {r}");
    }
}

fn print_notes(e: &Explanation) {
    for n in &e.notes {
        println!("note      {n}");
    }
}

//! `banyan explain METHOD URL [-H 'name: value']...`: the route, the bucket and the
//! backend a request would get, computed from the files with the data path's own
//! decision function. Sends nothing.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::json;

use super::common::{load_all, refuse, shown};
use crate::config::DEFAULT_CONFIG_PATH;
use crate::routes::request::sticky_key;
use crate::routes::split::{bp_to_text, BUCKETS};
use crate::routes::{RequestView, RouteTable, Sticky, DEFAULT_ROUTE};

#[derive(clap::Args)]
pub struct Args {
    /// HTTP method, e.g. GET.
    method: String,
    /// A URL ("http://shop.example.com/api/orders/7") or a path ("/api/orders/7").
    url: String,
    /// A request header, as curl writes it: -H 'x-user-id: alice'. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The client address, for routes sticky by "ip".
    #[arg(long, value_name = "IP")]
    client_ip: Option<IpAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[arg(long, short = 'c', default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

fn parse_headers(raw: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for h in raw {
        let Some((name, value)) = h.split_once(':') else {
            bail!("header `{h}` is not 'name: value'");
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("header name in `{h}`"))?;
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("header value in `{h}`"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

pub fn explain(args: &Args) -> anyhow::Result<ExitCode> {
    let method: Method = args
        .method
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("`{}` is not an HTTP method", args.method))?;
    let uri: Uri = args
        .url
        .parse()
        .with_context(|| format!("`{}` is not a URL or path", args.url))?;
    if uri.path().is_empty() || !uri.path().starts_with('/') {
        bail!("`{}`: the URL needs a path starting with '/'", args.url);
    }
    let headers = parse_headers(&args.headers)?;
    let (config, set, _) = match load_all(&args.config) {
        Ok(loaded) => loaded,
        Err(report) => return Err(refuse(&report, "cannot explain")),
    };
    let percents: Vec<u16> = set.routes.iter().map(|r| r.percent_bp).collect();
    let table = RouteTable::new(&set.routes, &percents).context("compiling the route table")?;
    let view = RequestView::new(&method, &uri, &headers, args.client_ip);
    let decision = table.decide(&view);
    let backend = decision.backend();

    let def = decision.route.map(|i| &*set.routes[i]);
    let upstream_name = match (def, backend) {
        (Some(d), crate::routes::Backend::Target) => {
            d.target.clone().unwrap_or_else(|| d.legacy.clone())
        }
        (Some(d), crate::routes::Backend::Legacy) => d.legacy.clone(),
        (None, _) => config.server.default_upstream.clone(),
    };
    let peers: Vec<String> = config
        .upstream(&upstream_name)
        .map(|u| u.peers.iter().map(|p| p.addr.to_string()).collect())
        .unwrap_or_default();

    let key = def.and_then(|d| {
        sticky_key(&d.sticky, &view)
            .bytes()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    });
    // Without a sticky key the data path draws a bucket per request: there is no one answer.
    let random = def
        .is_some_and(|d| d.target.is_some() && d.percent_bp > 0 && d.percent_bp < BUCKETS)
        && decision.split.is_some_and(|s| !s.keyed);
    let target_name = def.and_then(|d| d.target.clone());
    let legacy_name = def.map_or(config.server.default_upstream.clone(), |d| d.legacy.clone());
    let peers_of = |name: &str| -> String {
        config
            .upstream(name)
            .map(|u| {
                u.peers
                    .iter()
                    .map(|p| p.addr.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    if args.json {
        let out = json!({
            "route": def.map_or(DEFAULT_ROUTE, |d| d.name.as_str()),
            "source": def.map(|d| format!("{}:{}", shown(&d.file), d.line)),
            "match": def.map(|d| d.describe_match()),
            "percent": def.map(|d| bp_to_text(d.percent_bp)),
            "sticky": def.map(|d| d.sticky.describe()),
            "salt": def.map(|d| d.salt.clone()),
            "key": key,
            "bucket": decision.split.filter(|s| s.keyed).map(|s| s.bucket),
            "backend": if random { "random" } else { backend.as_str() },
            "upstream": if random { None } else { Some(&upstream_name) },
            "peers": peers,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }

    println!("request   {method} {uri}");
    match def {
        None => {
            println!("route     {DEFAULT_ROUTE}  (no route matched)");
        }
        Some(d) => {
            println!("route     {}  ({}:{})", d.name, shown(&d.file), d.line);
            println!("match     {}", d.describe_match());
            match &d.target {
                Some(t) => println!(
                    "split     {}% to target `{t}`, sticky {}, salt \"{}\"",
                    bp_to_text(d.percent_bp),
                    d.sticky.describe(),
                    d.salt
                ),
                None => println!("split     none: the route has no target"),
            }
            match (&key, decision.split) {
                (Some(k), Some(s)) => {
                    let what = match &d.sticky {
                        Sticky::Header(h) => format!("header {h}"),
                        Sticky::Cookie(c) => format!("cookie {c}"),
                        Sticky::Ip => "client ip".to_string(),
                        Sticky::None => String::new(),
                    };
                    println!("key       {what} = \"{k}\"");
                    println!(
                        "bucket    {} of {BUCKETS}  (target when bucket < {} = {}% × 100)",
                        s.bucket,
                        d.percent_bp,
                        bp_to_text(d.percent_bp)
                    );
                }
                _ if d.target.is_some() => {
                    let why = match &d.sticky {
                        Sticky::None => "the route is not sticky".to_string(),
                        Sticky::Ip => "no --client-ip given".to_string(),
                        s => format!("the request has no {}", s.describe()),
                    };
                    println!(
                        "key       none ({why}): each request is split at random, {}% to target",
                        bp_to_text(d.percent_bp)
                    );
                }
                _ => {}
            }
        }
    }
    match (random, def, &target_name) {
        (true, Some(d), Some(t)) => println!(
            "backend   random per request: target → {t} ({}) {}%, else legacy → {legacy_name} ({})",
            peers_of(t),
            bp_to_text(d.percent_bp),
            peers_of(&legacy_name)
        ),
        _ => println!(
            "backend   {} → {} ({})",
            backend.as_str(),
            upstream_name,
            peers.join(", ")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

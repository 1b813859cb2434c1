//! Desired state → snapshot: resolve each route's upstreams to pool indexes, compile the
//! matcher, attach metric handles, and set the per-route gauges.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::{split, RouteSet, RouteTable, DEFAULT_ROUTE};
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::upstream::Upstreams;

pub fn compile(
    config: &Config,
    upstreams: &Arc<Upstreams>,
    set: &RouteSet,
    metrics: &Metrics,
    generation: u64,
) -> Result<Snapshot, String> {
    let index = |name: &str| {
        upstreams
            .index_of(name)
            .ok_or_else(|| format!("unknown upstream `{name}`"))
    };
    let mut routes = Vec::with_capacity(set.routes.len());
    for def in &set.routes {
        let effective_bp = def.percent_bp;
        routes.push(CompiledRoute {
            name: def.name.clone(),
            name_header: HeaderValue::from_str(&def.name).map_err(|e| e.to_string())?,
            legacy: index(&def.legacy)?,
            target: def.target.as_deref().map(index).transpose()?,
            declared_bp: def.percent_bp,
            effective_bp,
            metrics: metrics.route(&def.name),
            def: Some(Arc::new(def.clone())),
        });
    }
    let percents: Vec<u16> = routes.iter().map(|r| r.effective_bp).collect();
    let table = RouteTable::new(&set.routes, &percents).map_err(|e| e.to_string())?;
    let default_route = CompiledRoute {
        name: DEFAULT_ROUTE.to_string(),
        name_header: HeaderValue::from_static(DEFAULT_ROUTE),
        def: None,
        legacy: index(&config.server.default_upstream)?,
        target: None,
        declared_bp: 0,
        effective_bp: 0,
        metrics: metrics.route(DEFAULT_ROUTE),
    };
    for r in &routes {
        metrics
            .route_target_percent
            .with_label_values(&[&r.name])
            .set(split::bp_to_percent(r.effective_bp));
        metrics
            .route_override
            .with_label_values(&[&r.name])
            .set(i64::from(r.effective_bp != r.declared_bp));
    }
    Ok(Snapshot {
        generation,
        loaded_at: SystemTime::now(),
        table,
        routes,
        default_route,
        upstreams: Arc::clone(upstreams),
        files: set.files.clone(),
    })
}

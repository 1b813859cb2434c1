//! Desired state → snapshot: resolve each route's upstreams to pool indexes, apply the
//! overrides, compile the matcher, attach metric handles, and set the per-route gauges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use super::overrides::Overrides;
use crate::compare::ShadowPlan;
use crate::config::Config;
use crate::guard::Window;
use crate::metrics::{Metrics, RouteMetrics};
use crate::model::{Override, Trigger};
use crate::ratelimit::Limiter;
use crate::routes::{split, Matcher, RouteSet, RouteTable, DEFAULT_ROUTE};
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::upstream::Upstreams;

/// What a snapshot is compiled from, besides the config.
pub struct Inputs<'a> {
    pub routes: &'a RouteSet,
    /// Compiled from `routes` when they were loaded; shared by every snapshot until the
    /// next reload.
    pub matcher: &'a Arc<Matcher>,
    pub overrides: &'a Overrides,
    /// Started ramps: a running, paused or finished one sets its route's percent.
    pub ramps: &'a super::ramp::Ramps,
    /// The overrides file could not be read at start: every route is held at 0 % (all
    /// traffic to legacy, the known-good side) until the file is readable again.
    pub hold_all_at_zero: bool,
    pub generation: u64,
    pub version: u64,
    pub loaded_at: SystemTime,
}

/// Per-route state that outlives snapshots: metric handles, guard windows (kept while the
/// window's length is unchanged) and rate limiters (kept while the limits are unchanged).
#[derive(Default)]
pub struct Kept {
    pub handles: HashMap<String, Arc<RouteMetrics>>,
    pub guards: HashMap<String, Arc<Window>>,
    pub limiters: HashMap<String, Arc<Limiter>>,
}

/// Why routes that validated could not be compiled into a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown upstream `{0}`")]
    UnknownUpstream(String),
    #[error("route `{route}`: rate_limit.rate {rate} cannot be enforced")]
    Rate { route: String, rate: f64 },
    #[error("route name `{0}` cannot be a header value")]
    Name(String),
    #[error("compiling the route table: {0}")]
    Matcher(#[from] regex::Error),
}

pub fn compile(
    config: &Config,
    upstreams: &Arc<Upstreams>,
    inputs: &Inputs,
    metrics: &Metrics,
    kept: &mut Kept,
) -> Result<Snapshot, BuildError> {
    let index = |name: &str| {
        upstreams
            .index_of(name)
            .ok_or_else(|| BuildError::UnknownUpstream(name.to_string()))
    };
    let held = Override {
        percent_bp: 0,
        shadow: false,
        trigger: Trigger::Manual,
        reason: "overrides.json is unreadable: holding every route at 0 % until it is repaired"
            .to_string(),
        at: String::new(),
    };
    let mut routes = Vec::with_capacity(inputs.routes.routes.len());
    for def in &inputs.routes.routes {
        let override_ = if inputs.hold_all_at_zero {
            Some(held.clone())
        } else {
            inputs.overrides.get(&def.name).cloned()
        };
        let ramp = match (inputs.ramps.get(&def.name), &def.ramp) {
            (Some(r), Some(d)) if r.phase.holds_percent() => Some((r, d)),
            _ => None,
        };
        let ramp_bp = ramp.and_then(|(r, d)| r.percent_bp(&d.steps));
        let effective_bp = match (&override_, &def.target) {
            (_, None) => 0,
            (Some(o), _) => o.percent_bp,
            (None, _) => ramp_bp.unwrap_or(def.percent_bp),
        };
        let guard = def.guard.as_ref().map(|g| {
            let w = kept
                .guards
                .entry(def.name.clone())
                .or_insert_with(|| Arc::new(Window::new(g.window)));
            if w.length != g.window {
                *w = Arc::new(Window::new(g.window));
            }
            Arc::clone(w)
        });
        let limiter = match &def.rate_limit {
            None => None,
            Some(r) => match kept.limiters.get(&def.name) {
                Some(l) if l.enforces(r) => Some(Arc::clone(l)),
                _ => {
                    let l = Arc::new(Limiter::new(r).ok_or_else(|| BuildError::Rate {
                        route: def.name.clone(),
                        rate: r.rate,
                    })?);
                    kept.limiters.insert(def.name.clone(), Arc::clone(&l));
                    Some(l)
                }
            },
        };
        routes.push(CompiledRoute {
            guard,
            limiter,
            name: def.name.clone(),
            name_header: HeaderValue::from_str(&def.name)
                .map_err(|_| BuildError::Name(def.name.clone()))?,
            legacy: index(&def.legacy)?,
            target: def.target.as_deref().map(index).transpose()?,
            declared_bp: def.percent_bp,
            effective_bp,
            shadow_paused: override_.as_ref().is_some_and(|o| !o.shadow),
            shadow: def
                .shadow
                .as_ref()
                .map(|s| {
                    index(&s.upstream).map(|u| {
                        Arc::new(ShadowPlan::new(
                            s,
                            &def.salt,
                            &def.sticky,
                            u,
                            config.shadow.max_body_bytes,
                        ))
                    })
                })
                .transpose()?,
            override_,
            ramp: ramp.map(|(r, d)| {
                (
                    (r.step.saturating_add(1)).min(d.steps.len()),
                    d.steps.len(),
                    r.phase.as_str(),
                )
            }),
            metrics: Arc::clone(
                kept.handles
                    .entry(def.name.clone())
                    .or_insert_with(|| Arc::new(metrics.route(&def.name))),
            ),
            def: Some(Arc::clone(def)),
        });
    }
    let percents: Vec<u16> = routes.iter().map(|r| r.effective_bp).collect();
    let mut table =
        RouteTable::with_matcher(Arc::clone(inputs.matcher), &inputs.routes.routes, &percents);
    for (rule, route) in table.rules.iter_mut().zip(&routes) {
        rule.rolled_back = route.override_.as_ref().is_some_and(Override::is_rollback);
    }
    let default_route = CompiledRoute {
        name: DEFAULT_ROUTE.to_string(),
        name_header: HeaderValue::from_static(DEFAULT_ROUTE),
        def: None,
        legacy: index(&config.server.default_upstream)?,
        target: None,
        declared_bp: 0,
        effective_bp: 0,
        override_: None,
        ramp: None,
        shadow_paused: false,
        shadow: None,
        metrics: Arc::clone(
            kept.handles
                .entry(DEFAULT_ROUTE.to_string())
                .or_insert_with(|| Arc::new(metrics.route(DEFAULT_ROUTE))),
        ),
        guard: None,
        limiter: None,
    };
    let live: std::collections::HashSet<&str> = inputs
        .routes
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    kept.guards.retain(|name, _| {
        inputs
            .routes
            .routes
            .iter()
            .any(|r| &r.name == name && r.guard.is_some())
    });
    kept.limiters.retain(|name, _| live.contains(name.as_str()));
    Ok(Snapshot {
        generation: inputs.generation,
        version: inputs.version,
        loaded_at: inputs.loaded_at,
        table,
        routes,
        default_route,
        upstreams: Arc::clone(upstreams),
        files: inputs.routes.files.clone(),
    })
}

/// What the per-route gauges show: (effective percent, overridden), by route.
pub type Exported = HashMap<String, (u16, bool)>;

/// Sets the per-route gauges of a published snapshot where they changed, and drops the
/// gauges and handles of routes that are gone (their counters stay: they stop growing,
/// as Prometheus expects).
pub fn export_gauges(
    snapshot: &Snapshot,
    metrics: &Metrics,
    handles: &mut HashMap<String, Arc<RouteMetrics>>,
    exported: &mut Exported,
) {
    for r in &snapshot.routes {
        let now = (r.effective_bp, r.override_.is_some());
        if exported.get(&r.name) == Some(&now) {
            continue;
        }
        metrics
            .route_target_percent
            .with_label_values(&[&r.name])
            .set(split::bp_to_percent(now.0));
        metrics
            .route_override
            .with_label_values(&[&r.name])
            .set(i64::from(now.1));
        exported.insert(r.name.clone(), now);
    }
    if exported.len() == snapshot.routes.len() && handles.len() == snapshot.routes.len() + 1 {
        return;
    }
    let live: std::collections::HashSet<&str> = snapshot
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .chain([DEFAULT_ROUTE])
        .collect();
    exported.retain(|name, _| {
        let keep = live.contains(name.as_str());
        if !keep {
            let _ = metrics.route_target_percent.remove_label_values(&[name]);
            let _ = metrics.route_override.remove_label_values(&[name]);
        }
        keep
    });
    handles.retain(|name, _| live.contains(name.as_str()));
}

/// A snapshot compiled from the files alone, as a proxy starting now would serve: the
/// route files with `overrides.json` (held at 0 % when it cannot be read, as at start),
/// every peer in rotation and every circuit closed. For `banyan explain --offline`; the
/// second value says what the overrides file held when it is not plain.
pub fn offline(config: &Config, routes: &RouteSet) -> anyhow::Result<(Snapshot, Option<String>)> {
    let metrics = Metrics::new()?;
    let upstreams = Arc::new(Upstreams::new(config, &metrics));
    let matcher = Arc::new(Matcher::new(&routes.routes)?);
    let (overrides, note) = match super::overrides::load(&config.server.state_dir) {
        Ok(o) => (o, None),
        Err(e) => (
            Overrides::new(),
            Some(format!(
                "{e}: a proxy starting now holds every route at 0 %"
            )),
        ),
    };
    let ramps = super::ramp::load(&config.server.state_dir).unwrap_or_default();
    let inputs = Inputs {
        routes,
        matcher: &matcher,
        overrides: &overrides,
        ramps: &ramps,
        hold_all_at_zero: note.is_some(),
        generation: 0,
        version: 0,
        loaded_at: SystemTime::now(),
    };
    let snap = compile(config, &upstreams, &inputs, &metrics, &mut Kept::default())?;
    Ok((snap, note))
}

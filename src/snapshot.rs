//! The snapshot: immutable, compiled routing state. The control plane builds one and
//! publishes it with `ArcSwap`; the data path loads it once per request and reads nothing
//! else. It is the only contract between the two.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::compare::ShadowPlan;
use crate::guard::Window;
use crate::metrics::RouteMetrics;
use crate::model::Override;
use crate::ratelimit::Limiter;
use crate::routes::{Backend, RouteDef, RouteTable};
use crate::upstream::{UpstreamPool, Upstreams};

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub struct Snapshot {
    /// Route-file loads applied so far (the first load is 1).
    pub generation: u64,
    /// Every published snapshot: reloads and override changes alike.
    pub version: u64,
    /// When the route files of this generation were loaded.
    pub loaded_at: SystemTime,
    pub table: RouteTable,
    /// Index for index with `table.rules`.
    pub routes: Vec<CompiledRoute>,
    pub default_route: CompiledRoute,
    pub upstreams: Arc<Upstreams>,
    /// The route files this snapshot was compiled from.
    pub files: Vec<PathBuf>,
}

/// A route as the data path needs it: where each side goes and where to count.
pub struct CompiledRoute {
    pub name: String,
    /// For the `x-banyan-route` debug header, built once.
    pub name_header: HeaderValue,
    /// `None` for `_default`.
    pub def: Option<Arc<RouteDef>>,
    pub legacy: usize,
    pub target: Option<usize>,
    pub declared_bp: u16,
    pub effective_bp: u16,
    /// The override in force, if any.
    pub override_: Option<Override>,
    /// A started ramp: (its step from 1, its number of steps, its state).
    pub ramp: Option<(usize, usize, &'static str)>,
    /// Shadow traffic paused by an override (rollback).
    pub shadow_paused: bool,
    /// What the route mirrors; `None` without `[route.shadow]`.
    pub shadow: Option<Arc<ShadowPlan>>,
    pub metrics: Arc<RouteMetrics>,
    /// The guard's window of target outcomes, with `[route.guard]`.
    pub guard: Option<Arc<Window>>,
    /// With `[route.rate_limit]`.
    pub limiter: Option<Arc<Limiter>>,
}

impl CompiledRoute {
    pub fn upstream_index(&self, backend: Backend) -> usize {
        match backend {
            Backend::Target => self.target.unwrap_or(self.legacy),
            Backend::Legacy => self.legacy,
        }
    }

    /// Whether target-bound requests may be served by legacy when the target cannot.
    pub fn falls_back(&self) -> bool {
        self.def.as_ref().is_some_and(|d| d.fallback)
    }

    /// Whether a target answer of 502/503/504 (or a timeout) is retried on legacy for this
    /// method: the route falls back and lists the method.
    pub fn retries_method(&self, method: &http::Method) -> bool {
        self.def
            .as_ref()
            .is_some_and(|d| d.fallback && d.fallback_methods.iter().any(|m| m == method.as_str()))
    }
}

impl CompiledRoute {
    /// Whether a gRPC call the target failed is retried on legacy: the route falls back
    /// and names the call (`/package.Service/Method`) in `fallback_methods`.
    pub fn retries_call(&self, path: &str) -> bool {
        self.def
            .as_ref()
            .is_some_and(|d| d.fallback && d.fallback_methods.iter().any(|m| m == path))
    }
}

impl Snapshot {
    pub fn route(&self, index: Option<usize>) -> &CompiledRoute {
        index
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.default_route)
    }

    pub fn upstream(&self, index: usize) -> &UpstreamPool {
        self.upstreams.get(index)
    }
}

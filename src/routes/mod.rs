//! Route tables: the files' schema and validation, the compiled matcher, and the split.
//! Everything here is plain data and pure functions; the data path calls
//! [`RouteTable::decide`] once per request.

pub mod cohort;
pub mod def;
pub mod descriptors;
pub mod headers;
pub mod load;
pub mod ramp;
pub mod request;
pub mod sections;
pub mod spec;
pub mod split;
pub mod table;
pub mod validate;

#[cfg(test)]
mod match_tests;
#[cfg(test)]
mod tests;

pub use def::{GuardDef, PathMatch, RateKey, RateLimitDef, RouteDef, Sticky};
pub use load::{load_dir, load_sources, RouteSet};
pub use request::RequestView;
pub use split::Salt;
pub use table::Matcher;

use std::sync::Arc;

use cohort::CohortDef;
use request::sticky_key;

/// The name unmatched traffic is reported under.
pub const DEFAULT_ROUTE: &str = "_default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Legacy,
    Target,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Target => "target",
        }
    }
}

/// A request's bucket under a salt, by its sticky key; a request without the key gets a
/// random bucket (`false`: not reproducible). Used by the split and by shadow sampling.
pub fn sticky_bucket(salt: &Salt, sticky: &Sticky, req: &RequestView) -> (u16, bool) {
    match sticky_key(sticky, req).bytes() {
        Some(k) => (salt.bucket(k), true),
        None => (split::random_bucket(), false),
    }
}

/// What the split of one route needs: who is sticky by what, the effective percent, and
/// who is forced to a side.
#[derive(Debug, Clone)]
pub struct SplitRule {
    pub salt: Salt,
    pub sticky: Sticky,
    /// Effective percent in basis points (declared, or an override's).
    pub percent_bp: u16,
    pub has_target: bool,
    pub cohorts: Arc<[CohortDef]>,
    /// Rolled back: everyone goes to legacy, forced cohorts too.
    pub rolled_back: bool,
}

impl SplitRule {
    pub fn of(def: &RouteDef, percent_bp: u16) -> Self {
        SplitRule {
            salt: Salt::new(&def.salt),
            sticky: def.sticky.clone(),
            percent_bp,
            has_target: def.target.is_some(),
            cohorts: def.cohorts.as_slice().into(),
            rolled_back: false,
        }
    }

    pub fn decide(&self, req: &RequestView) -> Split {
        let (bucket, keyed) = sticky_bucket(&self.salt, &self.sticky, req);
        let forced = match self.rolled_back || self.cohorts.is_empty() {
            true => None,
            false => cohort::forced(&self.cohorts, req),
        };
        let backend = match forced {
            Some((_, side)) => side,
            None if self.has_target && split::in_target(bucket, self.percent_bp) => Backend::Target,
            None => Backend::Legacy,
        };
        Split {
            backend,
            bucket,
            keyed,
            cohort: forced.map(|(i, _)| i as u16),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub backend: Backend,
    pub bucket: u16,
    /// False when the request had no sticky key and was split at random.
    pub keyed: bool,
    /// The forced cohort (its index in the route's list) that decided the side instead
    /// of the percent.
    pub cohort: Option<u16>,
}

/// Route index (`None`: `_default`, always legacy) and the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub route: Option<usize>,
    pub split: Option<Split>,
}

impl Decision {
    pub fn backend(&self) -> Backend {
        self.split.map_or(Backend::Legacy, |s| s.backend)
    }
}

/// The matcher and each route's split rule, index for index. The matcher depends only on
/// the route files, so override changes share it with the snapshot before.
#[derive(Debug)]
pub struct RouteTable {
    pub matcher: Arc<Matcher>,
    pub rules: Vec<SplitRule>,
}

impl RouteTable {
    /// `percents[i]` is route i's effective percent in basis points.
    pub fn new<D: std::ops::Deref<Target = RouteDef>>(
        defs: &[D],
        percents: &[u16],
    ) -> Result<RouteTable, regex::Error> {
        Ok(Self::with_matcher(
            Arc::new(Matcher::new(defs)?),
            defs,
            percents,
        ))
    }

    /// A table over an already compiled matcher of the same `defs`.
    pub fn with_matcher<D: std::ops::Deref<Target = RouteDef>>(
        matcher: Arc<Matcher>,
        defs: &[D],
        percents: &[u16],
    ) -> RouteTable {
        let rules = defs
            .iter()
            .zip(percents)
            .map(|(d, &p)| SplitRule::of(d, p))
            .collect();
        RouteTable { matcher, rules }
    }

    /// The request decision: match, then split. Pure; no allocation.
    pub fn decide(&self, req: &RequestView) -> Decision {
        match self.matcher.find(req) {
            Some(i) => Decision {
                route: Some(i),
                split: Some(self.rules[i].decide(req)),
            },
            None => Decision {
                route: None,
                split: None,
            },
        }
    }
}

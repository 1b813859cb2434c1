//! Reading the route files again: a file set with errors never replaces the serving
//! snapshot.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::routes::{self, Matcher, RouteSet};
use audit::Who;

use super::changes::{diff, percents};
use super::*;

impl Control {
    /// Reads the route files again. A file set with errors never replaces the serving
    /// snapshot: the error is logged, counted, audited, and kept for status.
    pub fn reload(&self, who: impl Into<Who>, reason: &str) -> Result<u64, ReloadError> {
        let who = who.into();
        let mut st = self.lock();
        if st.table > 0 {
            // The fleet's table is served: the folder is not what routes come from.
            tracing::warn!(
                "not reloading the routes folder ({reason}): this replica serves route table {} from the state store",
                st.table
            );
            return Err(ReloadError {
                at: crate::clock::now_rfc3339(),
                source: who.source.as_str().to_string(),
                errors: vec![format!(
                    "this replica serves route table {} from the state store ([state] routes = \"store\"): change routes with `banyan push`, not by reloading the folder",
                    st.table
                )],
            });
        }
        let started = Instant::now();
        let seen = self.fingerprint();
        let loaded = routes::load_dir(&self.config.server.routes_dir, &self.config);
        let old = self.shared.load_full();
        let before = percents(&old);
        let (routes, report) = match loaded {
            Ok(ok) => ok,
            Err(report) => {
                return Err(self.reload_failed(&mut st, &who, reason, report_lines(&report)))
            }
        };
        for w in report.warnings() {
            tracing::warn!("{w}");
        }
        let matcher = match compile_matcher(&routes) {
            Ok(m) => m,
            Err(e) => return Err(self.reload_failed(&mut st, &who, reason, vec![e.to_string()])),
        };
        let previous_matcher = std::mem::replace(&mut st.matcher, matcher);
        let previous = std::mem::replace(&mut st.routes, routes);
        st.generation += 1;
        st.loaded_at = SystemTime::now();
        let snapshot = match self.publish(&mut st) {
            Ok(s) => s,
            Err(e) => {
                st.routes = previous;
                st.matcher = previous_matcher;
                st.generation -= 1;
                return Err(self.reload_failed(&mut st, &who, reason, vec![e.to_string()]));
            }
        };
        st.last_reload_ms = started.elapsed().as_secs_f64() * 1000.0;
        st.last_reload_error = None;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        self.metrics
            .config_reloads_total
            .with_label_values(&["ok"])
            .inc();
        let after = percents(&snapshot);
        let mut entry = audit::Entry::by(&who, "reload", reason);
        entry.generation = Some(st.generation);
        entry.changes = diff(&before, &after);
        self.audit(&entry);
        tracing::info!(
            generation = st.generation,
            routes = snapshot.routes.len(),
            ms = format!("{:.1}", st.last_reload_ms),
            "route files reloaded ({reason})"
        );
        Ok(st.generation)
    }

    pub(super) fn reload_failed(
        &self,
        st: &mut State,
        who: &Who,
        reason: &str,
        errors: Vec<String>,
    ) -> ReloadError {
        self.metrics
            .config_reloads_total
            .with_label_values(&["error"])
            .inc();
        for e in &errors {
            tracing::error!(
                "reload refused, still serving generation {}: {e}",
                st.generation
            );
        }
        let err = ReloadError {
            at: crate::clock::now_rfc3339(),
            source: who.source.as_str().to_string(),
            errors,
        };
        let mut entry = audit::Entry::by(who, "reload", reason);
        entry.result = "error";
        entry.generation = Some(st.generation);
        entry.error = Some(err.errors.join("; "));
        self.audit(&entry);
        st.last_reload_error = Some(err.clone());
        err
    }
}

pub(super) fn compile_matcher(routes: &RouteSet) -> Result<Arc<Matcher>, build::BuildError> {
    Ok(Arc::new(Matcher::new(&routes.routes)?))
}

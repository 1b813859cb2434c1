//! The control plane: the one owner of the desired state (config and route files), which
//! compiles it into a [`Snapshot`] and publishes it. Nothing else changes routing.

pub mod build;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::diag::Report;
use crate::metrics::Metrics;
use crate::routes;
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::upstream::Upstreams;

pub struct Control {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    pub shared: SharedSnapshot,
}

impl Control {
    /// Loads the route files and publishes the first snapshot. A file set with errors
    /// refuses to start, with every error in the report.
    pub fn start(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<(Control, Report), Report> {
        let upstreams = Arc::new(Upstreams::new(&config));
        let (set, report) = match routes::load_dir(&config.server.routes_dir, &config) {
            Ok(loaded) => loaded,
            Err(report) => {
                metrics
                    .config_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                return Err(report);
            }
        };
        let snapshot = build::compile(&config, &upstreams, &set, &metrics, 1).map_err(|e| {
            let mut r = Report::default();
            r.extend([crate::diag::Diagnostic {
                severity: crate::diag::Severity::Error,
                file: config.server.routes_dir.clone(),
                line: 0,
                column: 0,
                message: e,
            }]);
            r
        })?;
        metrics
            .config_reloads_total
            .with_label_values(&["ok"])
            .inc();
        metrics.config_generation.set(1);
        let control = Control {
            config,
            metrics,
            upstreams,
            shared: Arc::new(ArcSwap::from_pointee(snapshot)),
        };
        Ok((control, report))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.load_full()
    }
}

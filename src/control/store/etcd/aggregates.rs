//! Decisions that need the whole fleet's figures. Every second each replica publishes its
//! guard windows (counts and a latency sketch per route, target side) under
//! `{prefix}/windows/{replica}`, bound to its lease; one replica, elected through etcd's
//! election API on `{prefix}/leader`, adds them up and judges each route's guard on the
//! sum. Only windows taken under the overrides this replica serves are added: a window
//! from before a rollback or a resume must not judge the route after it.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{Client, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use super::{Etcd, Revision, SessionError};
use crate::control::Control;
use crate::guard::Sketch;

/// One replica's windows, as published.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    replica: String,
    /// The overrides revision the windows were taken under.
    revision: Revision,
    /// Route → its target side's window.
    routes: BTreeMap<String, Sketch>,
}

impl Etcd {
    pub(super) fn leader_key(&self) -> String {
        format!("{}/leader", self.settings.prefix)
    }

    fn windows_prefix(&self) -> String {
        format!("{}/windows/", self.settings.prefix)
    }

    /// Publishes this replica's guard windows under its lease.
    pub(super) async fn publish_windows(
        &self,
        client: &mut Client,
        lease: i64,
        control: &Arc<Control>,
    ) -> Result<(), SessionError> {
        let routes = control.guard_sketches();
        if routes.is_empty() {
            return Ok(());
        }
        let published = Published {
            replica: self.settings.replica.clone(),
            revision: self.lock().overrides_revision,
            routes,
        };
        let value = serde_json::to_string(&published).unwrap_or_default();
        let key = format!("{}{}", self.windows_prefix(), self.settings.replica);
        client
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(())
    }

    /// The elected replica's turn: the fleet's windows added up, and judged.
    pub(super) async fn judge_fleet(
        &self,
        client: &mut Client,
        control: &Arc<Control>,
    ) -> Result<(), SessionError> {
        let listed = client
            .get(self.windows_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = self.lock().overrides_revision;
        let mut fleet: BTreeMap<String, Sketch> = BTreeMap::new();
        let mut replicas = 0;
        for kv in listed.kvs() {
            let Ok(p) = serde_json::from_slice::<Published>(kv.value()) else {
                continue;
            };
            if p.revision != revision {
                continue;
            }
            replicas += 1;
            for (route, sketch) in p.routes {
                fleet.entry(route).or_default().add(&sketch);
            }
        }
        if replicas < 2 {
            // One replica's windows are judged by that replica's own guard already.
            return Ok(());
        }
        let c = Arc::clone(control);
        let _ = tokio::task::spawn_blocking(move || c.check_fleet_guards(&fleet, replicas)).await;
        Ok(())
    }
}

//! The replica's session with etcd, on the control service's runtime: read the
//! overrides (sharing a change made here while etcd was away), take a lease and announce
//! the replica, then watch the overrides key and the replicas prefix and keep the lease
//! alive, all in one `select!`. Any error ends the session; `run` starts another after
//! half a second.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};

use super::{Etcd, Presence, SessionError, LEASE_SECONDS, RETRY};
use crate::control::overrides::{self, Overrides};
use crate::control::store::Revision;
use crate::control::Control;

impl Etcd {
    /// The replica's sessions with etcd, for as long as the process runs.
    pub async fn run(self: Arc<Self>, control: Arc<Control>) {
        let _ = self.handle.set(tokio::runtime::Handle::current());
        let _ = self.this.set(Arc::downgrade(&self));
        loop {
            if let Err(e) = self.session(&control).await {
                self.mark_down(&e.to_string());
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn session(&self, control: &Arc<Control>) -> Result<(), SessionError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        if let (Some(u), Some(p)) = (&self.settings.username, &self.settings.password) {
            options = options.with_user(u.clone(), p.clone());
        }
        let mut client = Client::connect(&self.settings.endpoints, Some(options)).await?;
        let key = self.overrides_key();
        let first = client.get(key.clone(), None).await?;
        let start = first.header().map_or(0, |h| h.revision());
        let in_store = first.kvs().first().map_or(0, |kv| kv.mod_revision());
        // Kept until etcd has answered for it: a session that fails on the way keeps it.
        let unshared = self.lock().unshared.clone();
        match (first.kvs().first(), unshared) {
            (_, Some(local)) if in_store == self.lock().applied_revision => {
                // Changed here while etcd was away (or directly), and nowhere else: the
                // fleet gets it.
                self.share(&mut client, &local, in_store).await?;
                self.lock().unshared = None;
            }
            (Some(kv), unshared) => {
                self.lock().unshared = None;
                if unshared.is_some() {
                    tracing::warn!("overrides changed here while etcd was away were also changed in etcd meanwhile: etcd's apply");
                }
                self.apply(control, kv.value(), kv.mod_revision()).await
            }
            (None, _) => {
                // An empty fleet store: what this replica serves becomes the fleet's.
                let current = control.current_overrides();
                if !current.is_empty() {
                    self.share(&mut client, &current, 0).await?;
                }
            }
        }
        let lease = client.lease_grant(LEASE_SECONDS, None).await?.id();
        let (mut keeper, mut kept) = client.lease_keep_alive(lease).await?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some((client.clone(), lease));
        {
            let mut g = self.lock();
            g.up = true;
            g.down_since = None;
            g.error = None;
            self.gauges.up.set(1);
        }
        let prefix = self.replicas_prefix();
        let me = format!("{prefix}{}", self.settings.replica);
        let presence = serde_json::to_string(&self.presence(&self.lock())).unwrap_or_default();
        client
            .put(me, presence, Some(PutOptions::new().with_lease(lease)))
            .await?;
        let listed = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        {
            let mut g = self.lock();
            g.replicas = listed
                .kvs()
                .iter()
                .filter_map(|kv| serde_json::from_slice::<Presence>(kv.value()).ok())
                .map(|p| (p.replica.clone(), p))
                .collect();
            self.gauges.replicas.set(g.replicas.len() as i64);
        }
        self.changed.notify_all();
        let listed_at = listed.header().map_or(0, |h| h.revision());
        let mut overrides_watch = client
            .watch(
                key,
                Some(WatchOptions::new().with_start_revision(start + 1)),
            )
            .await?;
        let mut replicas_watch = client
            .watch(
                prefix.clone(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(listed_at + 1),
                ),
            )
            .await?;
        let mut tick = tokio::time::interval(Duration::from_millis(1000));
        loop {
            tokio::select! {
                m = overrides_watch.message() => {
                    let resp = m?.ok_or(SessionError::Ended("the overrides watch ended"))?;
                    if resp.canceled() {
                        return Err(SessionError::Ended("the overrides watch was cancelled"));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        match ev.event_type() {
                            EventType::Put => self.apply(control, kv.value(), kv.mod_revision()).await,
                            EventType::Delete => self.apply(control, b"{}", kv.mod_revision()).await,
                        }
                    }
                }
                m = replicas_watch.message() => {
                    let resp = m?.ok_or(SessionError::Ended("the replicas watch ended"))?;
                    if resp.canceled() {
                        return Err(SessionError::Ended("the replicas watch was cancelled"));
                    }
                    let mut g = self.lock();
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let name = String::from_utf8_lossy(kv.key())
                            .trim_start_matches(prefix.as_str())
                            .to_string();
                        match ev.event_type() {
                            EventType::Put => {
                                if let Ok(p) = serde_json::from_slice::<Presence>(kv.value()) {
                                    g.replicas.insert(name, p);
                                }
                            }
                            EventType::Delete => {
                                g.replicas.remove(&name);
                            }
                        }
                    }
                    self.gauges.replicas.set(g.replicas.len() as i64);
                    drop(g);
                    self.changed.notify_all();
                }
                k = kept.message() => {
                    match k? {
                        Some(r) if r.ttl() > 0 => {}
                        _ => return Err(SessionError::Ended("the replica's lease expired")),
                    }
                }
                _ = tick.tick() => keeper.keep_alive().await?,
            }
        }
    }

    /// Writes overrides changed only here, if etcd still holds revision `in_store`.
    pub(super) async fn share(
        &self,
        client: &mut Client,
        local: &Overrides,
        in_store: Revision,
    ) -> Result<(), SessionError> {
        let txn = self.overrides_put_if(in_store, local);
        let resp = client.txn(txn).await?;
        if resp.succeeded() {
            let rev = resp.header().map_or(0, |h| h.revision());
            tracing::info!(
                revision = rev,
                "shared the overrides changed on this replica alone"
            );
            self.lock().applied_revision = rev;
            self.gauges.applied_revision.set(rev);
            self.put_presence();
        } else {
            tracing::warn!("overrides changed on this replica alone were changed in etcd meanwhile: etcd's apply");
        }
        Ok(())
    }

    /// Applies the overrides of `revision` as read from etcd.
    async fn apply(&self, control: &Arc<Control>, value: &[u8], revision: Revision) {
        let path = std::path::PathBuf::from(self.overrides_key());
        let parsed = std::str::from_utf8(value)
            .map_err(|_| "not UTF-8 text".to_string())
            .and_then(|t| overrides::parse(&path, t).map_err(|e| e.to_string()));
        match parsed {
            Ok(next) => {
                let c = Arc::clone(control);
                let _ = tokio::task::spawn_blocking(move || c.overrides_from_store(next, revision))
                    .await;
            }
            Err(e) => {
                tracing::error!("the fleet's overrides in etcd are unreadable ({e}); keeping the overrides in force");
                self.lock().error = Some(format!("overrides in etcd unreadable: {e}"));
                self.put_presence();
            }
        }
    }
}

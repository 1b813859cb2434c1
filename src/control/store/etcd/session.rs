//! The replica's session with etcd, on the control service's runtime: read the
//! overrides, the ramps and the route table (sharing a change made here while etcd was away, seeding
//! an empty store), take a lease and announce the replica, then watch the whole prefix —
//! one watch, so changes arrive in the store's order and "applied up to revision R" is
//! true of every key — and keep the lease alive, all in one `select!`. Any error ends the
//! session; `run` starts another after half a second.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    WatchOptions,
};

use super::{Etcd, Presence, SessionError, LEASE_SECONDS, RETRY};
use crate::control::overrides::{self, Overrides};
use crate::control::store::Revision;
use crate::control::tables::Table;
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

    /// Timeouts, credentials and TLS, read again for every session (renewed certificate
    /// files are picked up on the next reconnection). `timeout`: each request answered
    /// within 5 s — not for the election's campaign, which waits until it leads.
    fn connect_options(&self, timeout: bool) -> Result<ConnectOptions, SessionError> {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        if timeout {
            options = options.with_timeout(Duration::from_secs(5));
        }
        if let (Some(u), Some(p)) = (&self.settings.username, &self.settings.password) {
            options = options.with_user(u.clone(), p.clone());
        }
        if let Some(t) = &self.settings.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| SessionError::Tls(format!("cannot read {}: {e}", p.display())))
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &t.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(c), Some(k)) = (&t.client_cert, &t.client_key) {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            if let Some(name) = &t.server_name {
                tls = tls.domain_name(name.clone());
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    async fn session(&self, control: &Arc<Control>) -> Result<(), SessionError> {
        let options = self.connect_options(true)?;
        let mut client = Client::connect(&self.settings.endpoints, Some(options)).await?;
        let okey = self.overrides_key();
        let ramps_key = self.ramps_key();
        let first = client.get(okey.clone(), None).await?;
        let start = first.header().map_or(0, |h| h.revision());
        let in_store = first.kvs().first().map_or(0, |kv| kv.mod_revision());
        // Kept until etcd has answered for it: a session that fails on the way keeps it.
        let unshared = self.lock().unshared.clone();
        match (first.kvs().first(), unshared) {
            (_, Some(local)) if in_store == self.lock().overrides_revision => {
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
        self.first_ramps(&mut client, control, start).await?;
        if self.settings.routes_from_store {
            let routes = client
                .get(
                    self.routes_key(),
                    Some(GetOptions::new().with_revision(start)),
                )
                .await?;
            match routes.kvs().first() {
                Some(kv) => {
                    self.apply_table(control, kv.value(), kv.mod_revision())
                        .await
                }
                None => self.seed(&mut client, control).await?,
            }
        }
        let lease = client.lease_grant(LEASE_SECONDS, None).await?.id();
        let (mut keeper, mut kept) = client.lease_keep_alive(lease).await?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some((client.clone(), lease));
        {
            let mut g = self.lock();
            g.up = true;
            g.leader = false;
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
        let published = client
            .get(
                self.windows_prefix(),
                Some(GetOptions::new().with_prefix().with_revision(start)),
            )
            .await?;
        for kv in published.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if let Some(name) = key.strip_prefix(self.windows_prefix().as_str()) {
                self.windows_changed(name, Some(kv.value()));
            }
        }
        let mut watch = client
            .watch(
                format!("{}/", self.settings.prefix),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(start + 1),
                ),
            )
            .await?;
        // The election of the replica that judges the fleet's aggregates: campaigning
        // waits until this replica leads; its leadership ends with its lease.
        let mut election =
            Client::connect(&self.settings.endpoints, Some(self.connect_options(false)?))
                .await?
                .election_client();
        let campaign = election.campaign(self.leader_key(), self.settings.replica.clone(), lease);
        tokio::pin!(campaign);
        let mut leading = false;
        let windows = self.windows_prefix();
        // A new session publishes again, whatever it published before.
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut publisher = client.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(1000));
        loop {
            tokio::select! {
                elected = &mut campaign, if !leading => {
                    elected?;
                    leading = true;
                    self.lock().leader = true;
                    tracing::info!("elected to judge the fleet's aggregates");
                    self.put_presence();
                }
                m = watch.message() => {
                    let resp = m?.ok_or(SessionError::Ended("the watch ended"))?;
                    if resp.canceled() {
                        return Err(SessionError::Ended("the watch was cancelled"));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key());
                        let put = ev.event_type() == EventType::Put;
                        if key == okey {
                            let value: &[u8] = if put { kv.value() } else { b"{}" };
                            self.apply(control, value, kv.mod_revision()).await;
                        } else if key == ramps_key {
                            let value: &[u8] = if put { kv.value() } else { b"{}" };
                            self.apply_ramps(control, value, kv.mod_revision()).await;
                        } else if key == self.routes_key() {
                            if self.settings.routes_from_store && put {
                                self.apply_table(control, kv.value(), kv.mod_revision()).await;
                            }
                        } else if let Some(name) = key.strip_prefix(prefix.as_str()) {
                            self.presence_changed(name, put.then(|| kv.value()));
                        } else if let Some(name) = key.strip_prefix(windows.as_str()) {
                            self.windows_changed(name, put.then(|| kv.value()));
                        }
                    }
                }
                k = kept.message() => {
                    match k? {
                        Some(r) if r.ttl() > 0 => {}
                        _ => return Err(SessionError::Ended("the replica's lease expired")),
                    }
                }
                _ = tick.tick() => {
                    keeper.keep_alive().await?;
                    self.publish_windows(&mut publisher, lease, control).await?;
                    if leading {
                        self.judge_fleet(control).await;
                    }
                }
            }
        }
    }

    /// A replica's presence was written (`Some`) or expired.
    fn presence_changed(&self, name: &str, value: Option<&[u8]>) {
        let mut g = self.lock();
        match value {
            Some(v) => {
                if let Ok(p) = serde_json::from_slice::<Presence>(v) {
                    g.replicas.insert(name.to_string(), p);
                }
            }
            None => {
                g.replicas.remove(name);
            }
        }
        self.gauges.replicas.set(g.replicas.len() as i64);
        drop(g);
        self.changed.notify_all();
    }

    /// An empty store's first route table: the one this replica serves, unless another
    /// replica stores one first.
    async fn seed(&self, client: &mut Client, control: &Arc<Control>) -> Result<(), SessionError> {
        let c = Arc::clone(control);
        let Ok(Some(table)) = tokio::task::spawn_blocking(move || c.seed_table()).await else {
            return Ok(());
        };
        let resp = client.txn(self.table_put_if(0, &table)).await?;
        if resp.succeeded() {
            let rev = resp.header().map_or(0, |h| h.revision());
            tracing::info!(
                revision = rev,
                "the store had no route table: stored this replica's as table {}",
                table.number
            );
            let c = Arc::clone(control);
            let _ = tokio::task::spawn_blocking(move || c.seeded(&table, rev)).await;
        }
        Ok(())
    }

    /// Serves the route table stored at `revision`.
    async fn apply_table(&self, control: &Arc<Control>, value: &[u8], revision: Revision) {
        let table = match serde_json::from_slice::<Table>(value) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("the fleet's route table in etcd is unreadable ({e}); keeping the table in force");
                self.lock().error = Some(format!("route table in etcd unreadable: {e}"));
                self.put_presence();
                return;
            }
        };
        {
            // Seen, served or not: the next push here compares with it.
            let mut g = self.lock();
            g.routes_revision = g.routes_revision.max(revision);
            g.routes_number = g.routes_number.max(table.number);
        }
        let c = Arc::clone(control);
        let result = tokio::task::spawn_blocking(move || c.table_from_store(table, revision)).await;
        if let Ok(Err(e)) = result {
            tracing::error!("{e}");
            self.lock().error = Some(e);
            self.put_presence();
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
            {
                let mut g = self.lock();
                g.applied_revision = g.applied_revision.max(rev);
                g.overrides_revision = rev;
            }
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

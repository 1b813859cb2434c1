//! The route tables and the audit log in etcd. A table is written to `{prefix}/routes`
//! and `{prefix}/routes-history/{number}` in one transaction, compared with the routes
//! key's revision this replica saw last; history older than 100 tables is deleted in the
//! same transaction. Audit entries are written without waiting (the log is a record, not
//! a gate), and trimmed to the latest 1,000 every 64 writes.

use std::sync::atomic::{AtomicU32, Ordering};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use super::{conflict, Etcd, Revision, StoreError, WRITE_TIMEOUT};
use crate::control::audit;
use crate::control::tables::Table;

/// Tables kept in the history.
const HISTORY: u64 = 100;
/// Audit entries kept.
const AUDIT_KEPT: i64 = 1000;
static AUDIT_WRITES: AtomicU32 = AtomicU32::new(0);

impl Etcd {
    pub(super) fn routes_key(&self) -> String {
        format!("{}/routes", self.settings.prefix)
    }

    fn history_key(&self, number: u64) -> String {
        format!("{}/routes-history/{number:010}", self.settings.prefix)
    }

    fn audit_prefix(&self) -> String {
        format!("{}/audit/", self.settings.prefix)
    }

    /// The transaction storing `table` if the routes key is still at `expected` (0: never
    /// written).
    pub(super) fn table_put_if(&self, expected: Revision, table: &Table) -> Txn {
        let key = self.routes_key();
        let guard = if expected == 0 {
            Compare::version(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected)
        };
        let value = serde_json::to_string(table).unwrap_or_default();
        let mut ops = vec![
            TxnOp::put(key, value.clone(), None),
            TxnOp::put(self.history_key(table.number), value, None),
        ];
        if table.number > HISTORY {
            ops.push(TxnOp::delete(
                self.history_key(0),
                Some(DeleteOptions::new().with_range(self.history_key(table.number - HISTORY))),
            ));
        }
        Txn::new().when([guard]).and_then(ops)
    }

    pub(super) fn store_table(&self, table: &mut Table) -> Result<Revision, StoreError> {
        let Some((mut client, _)) = self.connected() else {
            return Err(StoreError::Unavailable(
                self.lock()
                    .error
                    .clone()
                    .unwrap_or_else(|| "not connected".into()),
            ));
        };
        let (expected, seen) = {
            let g = self.lock();
            (g.routes_revision, g.routes_number)
        };
        table.number = seen + 1;
        let txn = self
            .table_put_if(expected, table)
            .or_else([TxnOp::get(self.routes_key(), None)]);
        let resp = self
            .block_on(async move { client.txn(txn).await }, WRITE_TIMEOUT)?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        Err(conflict(resp, expected, "route tables"))
    }

    pub(super) fn read_tables(&self) -> Result<Vec<Table>, StoreError> {
        let Some((mut client, _)) = self.connected() else {
            return Err(StoreError::Unavailable("not connected".into()));
        };
        let prefix = format!("{}/routes-history/", self.settings.prefix);
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend);
        let resp = self
            .block_on(
                async move { client.get(prefix, Some(options)).await },
                WRITE_TIMEOUT,
            )?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Table>(kv.value()).ok())
            .collect())
    }

    pub(super) fn append_audit(&self, entry: &audit::Entry) {
        let (Some((mut client, _)), Some(handle)) = (self.connected(), self.handle.get()) else {
            return;
        };
        let Ok(mut value) = serde_json::to_value(entry) else {
            return;
        };
        value["replica"] = serde_json::Value::String(self.settings.replica.clone());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = self.audit_prefix();
        let key = format!("{prefix}{nanos:020}-{}", self.settings.replica);
        let trim = AUDIT_WRITES.fetch_add(1, Ordering::Relaxed) % 64 == 63;
        handle.spawn(async move {
            if client.put(key, value.to_string(), None).await.is_err() || !trim {
                return;
            }
            // The oldest entry kept; everything before it goes.
            let options = GetOptions::new()
                .with_prefix()
                .with_keys_only()
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(AUDIT_KEPT + 1);
            if let Ok(resp) = client.get(prefix.clone(), Some(options)).await {
                if resp.kvs().len() as i64 > AUDIT_KEPT {
                    if let Some(oldest) = resp.kvs().last() {
                        let mut end = oldest.key().to_vec();
                        end.push(0);
                        let _ = client
                            .delete(prefix, Some(DeleteOptions::new().with_range(end)))
                            .await;
                    }
                }
            }
        });
    }

    /// The fleet's latest audit entries, oldest first; this replica's own file when etcd
    /// cannot be reached.
    pub(super) fn read_audit(&self, limit: usize) -> (Vec<serde_json::Value>, String) {
        let from = format!(
            "etcd {} under {}",
            self.settings.endpoints.join(","),
            self.settings.prefix
        );
        let read = self.connected().map(|(mut client, _)| {
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(limit as i64);
            let prefix = self.audit_prefix();
            self.block_on(
                async move { client.get(prefix, Some(options)).await },
                WRITE_TIMEOUT,
            )
        });
        match read {
            Some(Ok(Ok(resp))) => {
                let mut out: Vec<serde_json::Value> = resp
                    .kvs()
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
                    .collect();
                out.reverse();
                (out, from)
            }
            _ => {
                let (entries, file) = super::super::local_audit(&self.state_dir, limit);
                (
                    entries,
                    format!("{file} (this replica only: the store cannot be reached)"),
                )
            }
        }
    }
}

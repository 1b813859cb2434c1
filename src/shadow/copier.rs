//! The shadow worker's side of a copy: sent to the new service (and, for noise, to
//! legacy again) within the shadow timeout, compared, counted, and a mismatch written to
//! the diff log.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method};
use pingora::connectors::http::Connector;

use crate::compare::{Answer, Difference, Field, SkipReason, Verdict};
use crate::metrics::shadow::Outcome;
use crate::metrics::Metrics;
use crate::upstream::client as fast_client;
use crate::upstream::forward::Forwarding;
use crate::upstream::UpstreamPool;
use copy::Original;
use difflog::{DiffEntry, DiffRecord};

use super::*;

/// The shadow worker's side: one shared Pingora connector for TLS upstreams (it owns
/// their pool of shadow connections); plain-HTTP copies use the upstream's shadow lane of
/// kept connections.
/// Why a copy got no answer to compare.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the request no longer parses")]
    Unreadable,
    #[error(transparent)]
    Tls(#[from] client::ExchangeError),
    #[error(transparent)]
    Plain(#[from] fast_client::Failure),
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
}

pub(super) struct Copier {
    pub(super) connector: Connector,
    pub(super) shared: Arc<ShadowShared>,
    pub(super) metrics: Arc<Metrics>,
}

impl Copier {
    /// Sends a copy of `original` to one upstream, bounded by the shadow timeout; the
    /// answer keeps the headers `rules` compare.
    async fn fetch(
        &self,
        upstream: &UpstreamPool,
        original: &Original,
        copy: &Forwarding<'_>,
        body: &Bytes,
        rules: &crate::compare::Rules,
    ) -> Result<Answer, CopyError> {
        let limits = &self.shared.limits;
        let copy = &Forwarding {
            upstream_host: upstream.host.as_ref(),
            ..*copy
        };
        let cap = limits.max_body_bytes;
        let exchange = async {
            if upstream.via_pingora() {
                // Boxed: Pingora's exchange future is tens of KiB, and inline it would size
                // (and be copied into) every shadow's task, TLS or not.
                let peer = upstream.pick_or_any().1;
                let wire = original.wire(copy, body).ok_or(CopyError::Unreadable)?;
                let (header, at) = copy::pingora_header(&wire).ok_or(CopyError::Unreadable)?;
                let body = Bytes::copy_from_slice(wire.get(at..).unwrap_or_default());
                Ok(Box::pin(client::exchange(&self.connector, peer, header, body, cap)).await?)
            } else {
                // Plain HTTP: banyan's own client, and the upstream's kept connections.
                let wire = original.wire(copy, body).ok_or(CopyError::Unreadable)?;
                let method = original.method();
                let head = method == Method::HEAD;
                let idempotent = method.is_idempotent();
                Ok(fast_client::fetch(upstream, &wire, head, idempotent, cap, rules).await?)
            }
        };
        match tokio::time::timeout(limits.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CopyError::TimedOut(limits.timeout)),
        }
    }

    pub(super) async fn run(&self, job: Job) {
        let Job {
            snapshot,
            route: index,
            client,
            request_id,
            scheme,
            ctx,
        } = job;
        let Some(route) = snapshot.routes.get(index) else {
            return;
        };
        let Some(plan) = route.shadow.as_deref() else {
            return;
        };
        let m = &*self.metrics;
        let stats = &route.metrics.shadow;
        let ShadowCtx {
            request,
            request_body,
            response,
            response_body,
            grpc,
        } = *ctx;
        let Some(mut primary) = response else {
            return;
        };
        let (body, complete) = response_body.finish();
        primary.body = body;
        primary.complete = complete;
        let (req_body, _) = request_body.finish();
        let head = request.method() == Method::HEAD;
        // A gRPC call compares by its answer type when the route names a descriptor set.
        let rules = if grpc {
            plan.rules.for_call(request.target())
        } else {
            std::borrow::Cow::Borrowed(&plan.rules)
        };
        // Legacy is asked twice only for what may run twice: safe methods, and gRPC calls
        // the route lists as safe to retry.
        let safe = if grpc {
            route.retries_call(request.target())
        } else {
            crate::compare::plan::is_safe(request.method())
        };
        let learn = plan.compare && plan.noise && safe && stats.take_learning_sample();
        // Each upstream's own Host is filled in by `fetch`.
        let copy = Forwarding {
            client,
            scheme,
            request_id: &request_id,
            upstream_host: None,
            shadow: true,
        };
        let shadow_call = async {
            let started = Instant::now();
            let upstream = snapshot.upstream(plan.upstream);
            let r = self
                .fetch(upstream, &request, &copy, &req_body, &plan.rules)
                .await;
            (r, started.elapsed())
        };
        let legacy_call = async {
            if !learn {
                return None;
            }
            let upstream = snapshot.upstream(route.legacy);
            // Boxed: a learning sample is rare, and inline its state would double the size
            // of every shadow's task.
            Box::pin(self.fetch(upstream, &request, &copy, &req_body, &plan.rules))
                .await
                .ok()
        };
        let ((result, took), second) = tokio::join!(shadow_call, legacy_call);
        let answer = match result {
            Ok(a) => {
                stats.observe_duration(m, took.as_secs_f64());
                a
            }
            Err(why) => {
                tracing::debug!(route = %route.name, "shadow request failed: {why}");
                stats.record(m, Outcome::Error);
                return;
            }
        };
        if !plan.compare {
            stats.record_skip(m, SkipReason::NotCompared);
            return;
        }
        if let Some(second) = second {
            let noise = stats.noise();
            if let Verdict::Mismatch { differences, .. } =
                crate::compare::compare(&primary, &second, head, &rules, &noise)
            {
                stats.learn(&differences);
            }
        }
        let noise = stats.noise();
        match crate::compare::compare(&primary, &answer, head, &rules, &noise) {
            Verdict::Match => stats.record(m, Outcome::Match),
            Verdict::Skipped(reason) => stats.record_skip(m, reason),
            Verdict::Mismatch { differences, total } => {
                stats.record(m, Outcome::Mismatch);
                let record = diff_record(
                    &self.shared,
                    &route.name,
                    &request,
                    &request_id,
                    &primary,
                    &answer,
                    differences,
                    total,
                );
                self.shared.diffs.append(record);
            }
        }
    }
}

/// The diff-log line for a mismatch: no request body or headers, no query string unless
/// configured, sensitive header values redacted.
#[allow(clippy::too_many_arguments)]
fn diff_record(
    shared: &ShadowShared,
    route: &str,
    request: &Original,
    request_id: &HeaderValue,
    primary: &Answer,
    shadow: &Answer,
    differences: Vec<Difference>,
    total: usize,
) -> DiffRecord {
    let target = request.target();
    let path = if shared.limits.log_query {
        target
    } else {
        target.split('?').next().unwrap_or(target)
    };
    let listed = differences.len();
    DiffRecord {
        time: crate::clock::now_rfc3339(),
        route: route.to_string(),
        method: request.method().to_string(),
        path: path.to_string(),
        request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
        legacy_status: primary.status,
        shadow_status: shadow.status,
        differences: differences
            .into_iter()
            .map(|d| {
                let redact = matches!(&d.field, Field::Header(h) if shared.is_sensitive(h));
                let hide = |v: Option<String>| {
                    if redact {
                        v.map(|_| "(redacted)".to_string())
                    } else {
                        v
                    }
                };
                DiffEntry {
                    field: d.field.name(),
                    legacy: hide(d.legacy),
                    shadow: hide(d.shadow),
                }
            })
            .collect(),
        more: total.saturating_sub(listed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn diff_records_redact_sensitive_headers_and_drop_query_strings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ShadowLimits {
            max_body_bytes: 1024,
            max_in_flight: 1,
            timeout: Duration::from_secs(1),
            diff_log_max_bytes: 1 << 20,
            log_query: false,
            sensitive_headers: vec![HeaderName::from_static("x-api-key")],
        };
        let shared = ShadowShared::new(limits, dir.path());
        let req = Original::Parsed(Box::new(
            pingora::http::RequestHeader::build("GET", b"/a/b?token=secret", None).expect("req"),
        ));
        let id = HeaderValue::from_static("r-1");
        let diff = |field: Field| Difference {
            field,
            legacy: Some("secret-l".into()),
            shadow: Some("secret-s".into()),
        };
        let differences = vec![
            diff(Field::Header("set-cookie".into())),
            diff(Field::Header("x-api-key".into())),
            diff(Field::Header("content-type".into())),
            diff(Field::Status),
        ];
        let answer = Answer {
            status: 200,
            ..Answer::default()
        };
        let r = diff_record(
            &shared,
            "orders",
            &req,
            &id,
            &answer,
            &answer,
            differences,
            40,
        );
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.request_id, "r-1");
        assert_eq!(r.more, 36);
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(text.matches("(redacted)").count(), 4, "{text}");
        assert_eq!(
            text.matches("secret").count(),
            4,
            "only the two unredacted fields: {text}"
        );
        assert_eq!(r.differences[2].legacy.as_deref(), Some("secret-l"));

        let limits_without_query = shared.limits.clone();
        let mut with_query = shared.limits.clone();
        with_query.log_query = true;
        let shared = ShadowShared::new(with_query, dir.path());
        let r = diff_record(&shared, "orders", &req, &id, &answer, &answer, vec![], 0);
        assert_eq!(r.path, "/a/b?token=secret");

        // The same from the bytes banyan's own path read.
        let raw = b"GET /a/b?token=secret HTTP/1.1\r\nHost: shop\r\n\r\n";
        let fast = copy::Raw::new(Bytes::copy_from_slice(raw), Method::GET);
        let req = Original::Raw(fast);
        let r = diff_record(&shared, "orders", &req, &id, &answer, &answer, vec![], 0);
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/a/b?token=secret")
        );
        let quiet = ShadowShared::new(limits_without_query, dir.path());
        let r = diff_record(&quiet, "orders", &req, &id, &answer, &answer, vec![], 0);
        assert_eq!(r.path, "/a/b");
    }
}

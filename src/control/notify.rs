//! Webhooks told of every change of routing state (`[notify]`): each audited change
//! becomes an event, queued (bounded: when full, new events are dropped and counted) and
//! POSTed in order, to each webhook in turn, by one thread of its own, with a few retries.
//! Nothing here is on the data path, and a dead receiver only costs that thread its
//! timeouts: the control plane never waits for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit;
use crate::config::notify::{Format, Notify};

/// Deliveries so far, for status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NotifyStatus {
    pub webhooks: usize,
    pub sent: u64,
    /// Given up after every retry.
    pub failed: u64,
    /// Not queued: the queue was full.
    pub dropped: u64,
    /// Waiting now.
    pub queued: u64,
    /// The last failure: the webhook (without its path: it may hold a secret) and why.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
    last_error: Mutex<Option<String>>,
}

pub struct Notifier {
    tx: SyncSender<Value>,
    counts: Arc<Counts>,
    webhooks: usize,
    replica: String,
    metric: IntCounterVec,
}

/// A webhook as logs and status name it: scheme, host and port; the path and query of a
/// webhook URL are often its secret.
fn shown(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => format!(
            "{}://{}",
            u.scheme_str().unwrap_or("http"),
            u.authority().map_or("?", |a| a.as_str())
        ),
        Err(_) => "an invalid URL".to_string(),
    }
}

/// One line saying what changed, for people (the Slack body, and `text` in JSON).
pub fn summary(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("");
    let mut line = format!("banyan on {}: {}", s("replica"), s("action"));
    if let Some(r) = e["route"].as_str() {
        line.push_str(&format!(" {r}"));
    }
    if let (Some(b), Some(a)) = (e["percent_before"].as_f64(), e["percent_after"].as_f64()) {
        line.push_str(&format!(" {b}% → {a}%"));
    }
    for c in e["changes"].as_array().into_iter().flatten() {
        let p = |k: &str| c[k].as_f64().map_or("-".to_string(), |v| format!("{v}%"));
        line.push_str(&format!(
            "; {} {} → {}",
            c["route"].as_str().unwrap_or("?"),
            p("percent_before"),
            p("percent_after")
        ));
    }
    if e["result"] == "error" {
        line.push_str(" REFUSED");
    }
    line.push_str(&format!(" ({}", s("source")));
    if let Some(a) = e["actor"].as_str() {
        line.push_str(&format!(", {a}"));
    }
    line.push_str(&format!("): {}", s("reason")));
    if let Some(err) = e["error"].as_str() {
        line.push_str(&format!(" — {err}"));
    }
    line
}

impl Notifier {
    /// Starts the delivery thread.
    pub fn start(
        config: &Notify,
        replica: String,
        metric: IntCounterVec,
    ) -> std::io::Result<Notifier> {
        let (tx, rx) = sync_channel(config.queue);
        let counts = Arc::new(Counts::default());
        let worker = Worker {
            config: config.clone(),
            counts: Arc::clone(&counts),
            metric: metric.clone(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(config.timeout))
                .http_status_as_error(false)
                .build()
                .into(),
        };
        std::thread::Builder::new()
            .name("banyan-notify".into())
            .spawn(move || worker.run(rx))?;
        Ok(Notifier {
            tx,
            counts,
            webhooks: config.webhooks.len(),
            replica,
            metric,
        })
    }

    /// Queues an audited change; never waits.
    pub fn send(&self, entry: &audit::Entry) {
        let Ok(mut event) = serde_json::to_value(entry) else {
            return;
        };
        event["replica"] = Value::String(self.replica.clone());
        event["text"] = Value::String(summary(&event));
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.queued.fetch_sub(1, Ordering::Relaxed);
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                self.metric.with_label_values(&["dropped"]).inc();
            }
        }
    }

    pub fn status(&self) -> NotifyStatus {
        let c = &self.counts;
        NotifyStatus {
            webhooks: self.webhooks,
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

struct Worker {
    config: Notify,
    counts: Arc<Counts>,
    metric: IntCounterVec,
    agent: ureq::Agent,
}

impl Worker {
    fn run(self, rx: Receiver<Value>) {
        crate::priority::lower_this_thread();
        for event in rx {
            let body = match self.config.format {
                Format::Json => event.clone(),
                Format::Slack => json!({ "text": event["text"] }),
            };
            for url in &self.config.webhooks {
                self.deliver(url, &body);
            }
            self.counts.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// POSTs `body` to `url`, again after 250 ms, 500 ms … up to `retries` times.
    fn deliver(&self, url: &str, body: &Value) {
        let mut pause = Duration::from_millis(250);
        let mut why = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                std::thread::sleep(pause);
                pause *= 2;
            }
            match self.agent.post(url).send_json(body) {
                Ok(r) if r.status().is_success() => {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                    self.metric.with_label_values(&["sent"]).inc();
                    return;
                }
                Ok(r) => why = format!("answered {}", r.status().as_u16()),
                Err(e) => why = e.to_string(),
            }
        }
        let line = format!(
            "{}: {why} (after {} attempts)",
            shown(url),
            self.config.retries + 1
        );
        tracing::warn!("a routing change was not delivered to the webhook {line}");
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        self.metric.with_label_values(&["failed"]).inc();
        *self
            .counts
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_named_without_its_secret_path() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/XXXX?token=1"),
            "https://hooks.slack.com"
        );
        assert_eq!(shown("http://127.0.0.1:9000/hook"), "http://127.0.0.1:9000");
    }

    #[test]
    fn the_summary_says_what_changed_and_why() {
        let mut e = audit::Entry::new(audit::Source::Guard, "rollback", "guard: error rate 12 %");
        e.route = Some("orders".into());
        e.percent_before = Some(25.0);
        e.percent_after = Some(0.0);
        let mut v = serde_json::to_value(&e).expect("json");
        v["replica"] = json!("banyan-0");
        assert_eq!(
            summary(&v),
            "banyan on banyan-0: rollback orders 25% → 0% (guard): guard: error rate 12 %"
        );
        let mut r = audit::Entry::new(audit::Source::File, "reload", "routes folder changed");
        r.result = "error";
        r.error = Some("orders.toml:3:1: error: ...".into());
        let v = serde_json::to_value(&r).expect("json");
        assert!(
            summary(&v).contains("reload REFUSED (file): routes folder changed — orders.toml:3:1")
        );
    }
}

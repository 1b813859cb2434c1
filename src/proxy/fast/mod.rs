//! banyan's own HTTP/1.1 path for the common request: plain listener, whole request in
//! the first read, no upgrade, a plain-HTTP upstream. It makes the same decision from the
//! same snapshot as the Pingora callbacks and keeps their rules (forwarding headers,
//! fallbacks and retries, timeouts, health and circuit observations, guard window,
//! metrics, access log, shadow copies) with a fraction of the work per request: one parse
//! in place, one write each way, kept upstream connections taken from a lock-free queue.
//! Whatever it does not take is handed to Pingora before a byte is consumed or written.
//!
//! - `head.rs`: which requests qualify, and the request sent upstream.
//! - `client.rs`: the upstream exchange, also used for shadow copies.
//! - `response.rs`: the upstream's response head, framing, and the head the client gets.

pub mod response;

use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use crate::proxy::sock::Sock;
use bytes::{Buf, Bytes};
use http::Method;
use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

use super::flow::attempt::{Failed, Next};
use super::flow::decide::Admission;
use super::flow::outcome::{error_body, Ending};
use super::flow::Ctx;
use super::Proxy;
use crate::compare::Answer;
use crate::http1::framing::Refusal;
use crate::http1::request::{self as head, Handoff, Head};
use crate::http1::response::{Framing, Parsed};
use crate::http1::{format_len, push_header};
use crate::routes::request::{strip_port, Headers};
use crate::routes::RequestView;
use crate::shadow::copy::{Original, Raw};
use crate::shadow::ShadowCtx;
use crate::snapshot::Snapshot;
use crate::upstream::client::{self, Answered, BodyRelay, Exchange, Failure};
use crate::upstream::forward::{self, Forwarding};
use crate::upstream::Lane;
use response::Additions;

/// What became of the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    KeepAlive,
    Close,
}

/// The client side of one request.
pub struct Client<'a> {
    pub stream: &'a mut Sock,
    pub ip: Option<IpAddr>,
    /// The connection closes after this request (shutdown has begun).
    pub closing: bool,
    /// The connection's timer, lent to the upstream exchange's reads and writes.
    pub timer: Pin<&'a mut Sleep>,
}

impl Proxy {
    /// Serves the request at the start of `req` (every byte read so far) on the fast path
    /// and says how many bytes it took, or says why Pingora must serve it; then nothing
    /// was consumed or written.
    pub async fn serve_fast(
        &self,
        client: Client<'_>,
        req: &[u8],
    ) -> Result<(Served, usize), Handoff> {
        let mut hs = head::slots();
        let head = head::parse(req, &mut hs)?;
        let used = head.wire_len();
        let req = &req[..used];
        let method = Method::from_bytes(head.method.as_bytes()).map_err(|_| Handoff::Unusual)?;
        let headers = Headers::Parsed(head.headers);
        let snap = self.shared.load_full();
        let view = RequestView {
            method: head.method,
            path: head.path(),
            host: headers.host().map(strip_port),
            headers,
            client_ip: client.ip,
        };
        let pingora = |i: Option<usize>| i.is_some_and(|i| snap.upstream(i).via_pingora());
        let decision = snap.table.decide(&view);
        let route = snap.route(decision.route);
        if pingora(Some(route.legacy)) || pingora(route.target) {
            return Err(Handoff::Route);
        }
        let mut ctx = Ctx::new(Some(self.shadower.busy()));
        ctx.client = client.ip;
        ctx.request_id = forward::request_id(headers.get(&forward::X_REQUEST_ID));
        let body = head.body(req);
        match self.admit(&mut ctx, snap.clone(), decision, &view) {
            Admission::Proceed { mirror, .. } => {
                if mirror {
                    // The whole request, for the copy; shared by its head and body.
                    let req_bytes = Bytes::copy_from_slice(req);
                    ctx.shadow = self.sample_shadow_fast(&ctx, &view, &head, &method, &req_bytes);
                }
            }
            Admission::Limited { retry_after } => {
                let served = self
                    .answer_error(
                        client,
                        &mut ctx,
                        (429, Some(retry_after)),
                        false,
                        &method,
                        &head,
                    )
                    .await;
                return Ok((served, used));
            }
            Admission::Unavailable => {
                let served = self
                    .answer_error(client, &mut ctx, (503, None), false, &method, &head)
                    .await;
                return Ok((served, used));
            }
        }
        let served = self
            .forward(client, &mut ctx, &snap, &head, &method, body)
            .await;
        Ok((served, used))
    }

    /// The attempts (fallbacks and retries included) and the relay of the answer.
    async fn forward(
        &self,
        mut client: Client<'_>,
        ctx: &mut Ctx,
        snap: &Snapshot,
        head: &Head<'_>,
        method: &Method,
        body: &[u8],
    ) -> Served {
        let route = snap.route(ctx.route);
        let mut out = Vec::with_capacity(head.head_len + body.len() + 256);
        let mut parsed = Parsed::default();
        let answered = loop {
            let pool = snap.upstream(ctx.upstream);
            let (peer, _) = pool.pick_or_any();
            ctx.begin_attempt(peer);
            out.clear();
            let fwd = Forwarding {
                client: ctx.client,
                scheme: ctx.scheme,
                request_id: &ctx.request_id,
                upstream_host: pool.host.as_ref(),
                shadow: false,
            };
            forward::write_request(&mut out, head.line(), || head.fields(), body, &fwd);
            let how = Exchange {
                head_request: *method == Method::HEAD,
                idempotent: method.is_idempotent(),
                step_timeout: Some(pool.read_timeout()),
                // A mirrored request's answer keeps the headers its comparison reads.
                keep: ctx
                    .shadow
                    .as_ref()
                    .and(route.shadow.as_deref())
                    .map(|plan| &plan.rules),
                lane: Lane::Client,
            };
            let timer = Some(client.timer.as_mut());
            let failure = match client::attempt(pool, peer, &out, how, timer, &mut parsed).await {
                Ok(a) => {
                    let status = a.parsed.status;
                    ctx.upstream_answered();
                    pool.observe(peer, true, status < 500);
                    if matches!(status, 502..=504) {
                        let failed = Failed::Status(status);
                        if let Next::FallBack(_) = self.after_failure(ctx, failed, method, true) {
                            continue;
                        }
                    }
                    break a;
                }
                Err(f) => f,
            };
            pool.observe(peer, false, false);
            let failed = match failure {
                Failure::Connect { timed_out } => Failed::Connect { timed_out },
                Failure::BadAnswer(why) => {
                    self.metrics
                        .bad_responses_total
                        .with_label_values(&[why])
                        .inc();
                    Failed::BadAnswer
                }
                Failure::Exchange { timed_out, .. } => Failed::Exchange { timed_out },
            };
            // The request is whole in memory and the client has nothing yet: it can
            // always be sent again.
            let code = match self.after_failure(ctx, failed, method, true) {
                Next::OtherPeer | Next::FallBack(_) => continue,
                Next::Fail(code) => code,
                Next::PassOn => 502,
            };
            return self
                .answer_error(client, ctx, (code, None), true, method, head)
                .await;
        };
        self.relay(client, ctx, snap, head, method, answered).await
    }

    /// Sends the answer to the client as it streams and does the bookkeeping.
    async fn relay(
        &self,
        mut client: Client<'_>,
        ctx: &mut Ctx,
        snap: &Snapshot,
        head: &Head<'_>,
        method: &Method,
        answered: Answered<'_>,
    ) -> Served {
        let Answered {
            mut stream,
            parsed,
            read: mut rest,
        } = answered;
        let pool = snap.upstream(ctx.upstream);
        let close = client.closing || head.close || parsed.framing == Framing::UntilClose;
        let fields = self.debug_fields(ctx);
        let debug: Vec<(&'static str, &[u8])> =
            fields.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let mut out = Vec::with_capacity(rest.len() + 128);
        response::write_client_head(
            &mut out,
            rest.get(..parsed.head_len).unwrap_or_default(),
            parsed,
            &Additions {
                request_id: &ctx.request_id,
                debug: &debug,
                close,
            },
        );
        rest.advance(parsed.head_len.min(rest.len()));
        if let Some(sh) = ctx.shadow.as_mut() {
            sh.response = Some(Answer {
                status: parsed.status,
                headers: std::mem::take(&mut parsed.kept),
                body: Bytes::new(),
                complete: true,
            });
        }
        let total = pool.config.total_timeout;
        let timeout = Some(pool.read_timeout());
        let started = ctx.attempt_started;
        let mut body = BodyRelay::new(parsed.framing);
        let mut ending = Ending {
            status: parsed.status,
            failed: false,
            upstream_failed: false,
            transport: "fast",
        };
        // The first write carries the head and whatever body came with it. A chunked body
        // that turns out malformed ends the exchange: the client has what came before it.
        let mut body_bad = body
            .feed(
                &mut rest,
                Some(&mut out),
                ctx.shadow.as_deref_mut().map(|s| &mut s.response_body),
            )
            .is_err();
        let mut upstream_ok = !body_bad;
        let mut client_ok = self.write(client.stream, &out).await;
        while upstream_ok && client_ok && !body.done() {
            if total.is_some_and(|t| started.elapsed() > t) {
                upstream_ok = false;
                break;
            }
            let timer = Some(client.timer.as_mut());
            match body.read(&mut stream, &mut rest, timeout, timer).await {
                Ok(true) => {
                    out.clear();
                    body_bad = body
                        .feed(
                            &mut rest,
                            Some(&mut out),
                            ctx.shadow.as_deref_mut().map(|s| &mut s.response_body),
                        )
                        .is_err();
                    upstream_ok = !body_bad;
                    client_ok = self.write(client.stream, &out).await;
                }
                Ok(false) => {}
                Err(_) => upstream_ok = false,
            }
        }
        if !upstream_ok {
            if body_bad {
                self.metrics
                    .bad_responses_total
                    .with_label_values(&["bad_chunk"])
                    .inc();
            }
            ending.failed = true;
            ending.upstream_failed = true;
        } else if !client_ok {
            ending.failed = true;
        }
        if !ending.failed {
            body.release(pool, (ctx.peer, Lane::Client), stream, &rest, parsed);
        }
        self.finish(ctx, ending, method, head.path());
        if close || ending.failed {
            Served::Close
        } else {
            Served::KeepAlive
        }
    }

    /// Answers with banyan's JSON error and closes: the upstream could not (`upstream_failed`),
    /// or the route refuses a target that cannot take the request.
    async fn answer_error(
        &self,
        client: Client<'_>,
        ctx: &mut Ctx,
        (code, retry_after): (u16, Option<u64>),
        upstream_failed: bool,
        method: &Method,
        head: &Head<'_>,
    ) -> Served {
        let out = error_response(code, ctx, retry_after);
        let ok = self.write(client.stream, &out).await;
        let ending = Ending {
            status: if ok { code } else { 0 },
            failed: upstream_failed,
            upstream_failed,
            transport: "fast",
        };
        self.finish(ctx, ending, method, head.path());
        Served::Close
    }

    /// A write to the client within `server.send_timeout`, counted when it runs out: the
    /// exchange then ends, and its upstream connection is closed, not kept.
    async fn write(&self, stream: &mut Sock, bytes: &[u8]) -> bool {
        match write(stream, bytes, self.limits.send_timeout).await {
            Sent::Done => true,
            Sent::Gone => false,
            Sent::TimedOut => {
                self.metrics
                    .client_timeouts_total
                    .with_label_values(&["send"])
                    .inc();
                false
            }
        }
    }

    /// Answers a request refused for its framing (400, or 501 for an unknown coding) and
    /// counts it; nothing was forwarded, and the connection closes, since where the next
    /// request would start is what is in doubt.
    pub async fn refuse(&self, stream: &mut Sock, why: Refusal) {
        self.metrics
            .bad_requests_total
            .with_label_values(&[why.as_str()])
            .inc();
        tracing::debug!("request refused: {why}");
        let status = why.status();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let out = plain_answer(status, reason, &format!("bad request: {why}"));
        let _ = write(stream, &out, self.limits.send_timeout).await;
    }

    /// The fast path's `sample_shadow`: the copy will be written from the request's bytes,
    /// and its body is already whole.
    fn sample_shadow_fast(
        &self,
        ctx: &Ctx,
        view: &RequestView,
        head: &Head<'_>,
        method: &Method,
        request: &Bytes,
    ) -> Option<Box<ShadowCtx>> {
        let (_, route) = ctx.decided()?;
        let body = head.body(request);
        let cap = self.shadow_cap(route, view, Some(body.len() as u64))?;
        let raw = Raw::new(request.clone(), method.clone());
        let mut sh = ShadowCtx::new(Original::Raw(raw), cap);
        if head.decoded.is_some() {
            sh.request_body.push(&Bytes::copy_from_slice(body));
        } else {
            sh.request_body
                .push(&request.slice(head.head_len..head.wire_len()));
        }
        Some(sh)
    }
}

/// How a write to a client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Done,
    /// The client is gone.
    Gone,
    /// It stopped reading for `server.send_timeout`.
    TimedOut,
}

/// Writes everything and flushes within `limit` (`server.send_timeout`). The timer is
/// set only when the socket cannot take the bytes at once: most answers fit its buffer,
/// and a timer costs a clock read.
pub async fn write(stream: &mut Sock, bytes: &[u8], limit: Duration) -> Sent {
    let all = async { stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok() };
    match crate::clock::within(limit, all).await {
        Some(true) => Sent::Done,
        Some(false) => Sent::Gone,
        None => Sent::TimedOut,
    }
}

/// An answer written before any request was routed (a refusal, a head too large or too
/// slow): a JSON error, and the connection closes.
pub fn plain_answer(status: u16, reason: &str, error: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": error }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// banyan's JSON error answer, as the Pingora path writes it; the connection closes.
fn error_response(code: u16, ctx: &Ctx, retry_after: Option<u64>) -> Vec<u8> {
    let body = error_body(code, ctx, retry_after);
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n",
        body.len()
    )
    .into_bytes();
    if let Some(seconds) = retry_after {
        let mut digits = [0u8; 20];
        let seconds = usize::try_from(seconds).unwrap_or(usize::MAX);
        push_header(&mut out, b"Retry-After", format_len(&mut digits, seconds));
    }
    push_header(&mut out, b"X-Request-Id", ctx.request_id.as_bytes());
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

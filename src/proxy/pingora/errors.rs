//! How Pingora's errors become what the client gets: the status for an error (the same
//! 502/504 rule as banyan's own path, `flow::attempt::gateway_status`), banyan's JSON
//! error answer, and an upstream answer that cannot be framed.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::proxy::flow::attempt::{gateway_status, Failed, Next};
use crate::proxy::flow::outcome::error_body;
use crate::proxy::flow::{grpc, Ctx};
use crate::proxy::Proxy;
use crate::upstream::followed::{self, AnswerRefused};
use crate::upstream::forward as headers;

impl Proxy {
    /// An upstream answer refused below Pingora (`upstream::followed`), as banyan's own
    /// client refuses it: a 502, the connection dropped, legacy tried where it may be.
    pub(super) fn answer_refused(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        e: &Error,
    ) -> Option<Box<Error>> {
        let AnswerRefused(why) = followed::io_cause::<AnswerRefused>(e)?;
        let why = why.clone();
        let mut bad = self.bad_response(session, ctx, why.as_str(), &why);
        // Mid-body, the client has the head already: nothing can be sent again.
        let fresh = session.response_written().is_none();
        if std::mem::take(&mut ctx.retry_on_legacy) && fresh {
            bad.set_retry(true);
        }
        Some(bad)
    }

    /// An upstream answer whose framing is in doubt: counted, the upstream connection is
    /// not reused (an error ends the exchange), and the request is handled as a broken
    /// exchange: retried on legacy where the route allows, else a 502.
    pub(super) fn bad_response(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        reason: &'static str,
        bad: &dyn std::fmt::Display,
    ) -> Box<Error> {
        self.metrics
            .bad_responses_total
            .with_label_values(&[reason])
            .inc();
        let mut e = Error::explain(
            ErrorType::HTTPStatus(502),
            format!("the upstream's answer cannot be framed: {bad}"),
        );
        e.set_retry(false);
        if let Some((snap, _)) = ctx.decided() {
            snap.upstream(ctx.upstream).observe(ctx.peer, false, false);
        }
        let replayable = !session.as_ref().retry_buffer_truncated();
        let method = &session.req_header().method;
        if let Next::FallBack(_) = self.after_failure(ctx, Failed::BadAnswer, method, replayable) {
            ctx.retry_on_legacy = true;
        }
        e
    }
}

pub(super) fn no_decision() -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        "request reached the upstream phase without a routing decision",
    )
}

pub(super) fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// The status the client gets for an error that ended the exchange; 0 when the client is
/// gone (or timed out) and gets nothing.
pub(super) fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ if e.esource() == &ErrorSource::Upstream => gateway_status(is_timeout(e)),
        _ => match e.esource() {
            ErrorSource::Upstream => gateway_status(false),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::WriteTimedout
                | ErrorType::ReadTimedout => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Writes the JSON error response (for a gRPC call, a trailers-only answer with the
/// status gRPC maps `code` to); the connection is not reused afterwards.
pub(super) async fn respond_error(
    session: &mut Session,
    code: u16,
    ctx: &mut Ctx,
    retry_after: Option<u64>,
) {
    if ctx.grpc {
        let passed = ctx.deadline.is_some_and(|d| std::time::Instant::now() >= d);
        let status = grpc::code_for(code, passed);
        ctx.grpc_status = Some(status);
        return respond_grpc(session, code, status, ctx).await;
    }
    let body = error_body(code, ctx, retry_after);
    let Ok(mut resp) = ResponseHeader::build(code, Some(5)) else {
        return;
    };
    let ok = retry_after.is_none_or(|s| resp.insert_header(http::header::RETRY_AFTER, s).is_ok())
        && resp
            .insert_header(http::header::CONTENT_TYPE, "application/json")
            .is_ok()
        && resp
            .insert_header(http::header::CONTENT_LENGTH, body.len())
            .is_ok()
        && resp
            .insert_header(http::header::CACHE_CONTROL, "no-store")
            .is_ok()
        && resp
            .insert_header(headers::X_REQUEST_ID, ctx.request_id.clone())
            .is_ok();
    if ok {
        session.set_keepalive(None);
        if let Err(err) = session.write_error_response(resp, body).await {
            tracing::debug!("could not send the error response: {err}");
        }
    }
}

/// A gRPC call's end told by banyan: HTTP 200, `grpc-status` and `grpc-message` in the
/// head, no body (gRPC's trailers-only form).
async fn respond_grpc(session: &mut Session, http: u16, status: u8, ctx: &Ctx) {
    let Ok(mut resp) = ResponseHeader::build(200, Some(5)) else {
        return;
    };
    // Plain ASCII without `%`, so nothing to percent-encode; the request id is in
    // `x-request-id`.
    let message = format!("banyan answered {http} for this call");
    let ok = resp
        .insert_header(http::header::CONTENT_TYPE, "application/grpc")
        .is_ok()
        && resp.insert_header("grpc-status", u16::from(status)).is_ok()
        && resp.insert_header("grpc-message", message).is_ok()
        && resp
            .insert_header(headers::X_REQUEST_ID, ctx.request_id.clone())
            .is_ok();
    if ok {
        if let Err(err) = session
            .write_error_response(resp, bytes::Bytes::new())
            .await
        {
            tracing::debug!("could not send the error response: {err}");
        }
    }
}

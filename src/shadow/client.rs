//! One HTTP exchange for a shadow (or a second legacy call for noise): send the prepared
//! request and its captured body through the shared Pingora connector, read the answer up
//! to the cap. The caller bounds the whole exchange with the shadow timeout.

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::compare::Answer;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("sending the request: {0}")]
    Send(String),
    #[error("reading the answer: {0}")]
    Receive(String),
}

/// Sends `request` with `body` to `peer` and reads the answer, keeping at most `cap` body
/// bytes. A connection whose answer was read whole goes back to the pool.
pub async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    request: RequestHeader,
    body: Bytes,
    cap: usize,
) -> Result<Answer, ExchangeError> {
    let (mut session, _reused) = connector
        .get_http_session(peer)
        .await
        .map_err(|e| ExchangeError::Connect(e.to_string()))?;
    let send = |e: Box<pingora::Error>| ExchangeError::Send(e.to_string());
    let receive = |e: Box<pingora::Error>| ExchangeError::Receive(e.to_string());
    session
        .write_request_header(Box::new(request))
        .await
        .map_err(send)?;
    if !body.is_empty() {
        session.write_request_body(body, true).await.map_err(send)?;
    }
    session.finish_request_body().await.map_err(send)?;
    // Informational answers (100 Continue) come before the real one.
    let header = loop {
        session.read_response_header().await.map_err(receive)?;
        let Some(h) = session.response_header() else {
            return Err(ExchangeError::Receive("no response header".into()));
        };
        if !h.status.is_informational() || h.status.as_u16() == 101 {
            break (h.status.as_u16(), h.headers.clone());
        }
    };
    let mut collected = BytesMut::new();
    let mut complete = true;
    while let Some(chunk) = session.read_response_body().await.map_err(receive)? {
        if collected.len() + chunk.len() > cap {
            complete = false;
            break;
        }
        collected.extend_from_slice(&chunk);
    }
    // gRPC's status and metadata come after the body: kept with the headers.
    let mut headers = header.1;
    if let (true, pingora::protocols::http::client::HttpSession::H2(h2)) = (complete, &mut session)
    {
        if let Ok(Some(trailers)) = h2.read_trailers().await {
            headers.extend(trailers);
        }
    }
    if complete && session.response_done() {
        let idle = peer.options.idle_timeout;
        connector.release_http_session(session, peer, idle).await;
    } else {
        session.shutdown().await;
    }
    Ok(Answer {
        status: header.0,
        headers,
        body: collected.freeze(),
        complete,
    })
}

//! Attempts: what happens after one failed, for both transports. A failure (connect,
//! a 502–504 answer, an answer that cannot be framed, an exchange cut or timed out) and
//! where the request stands go in; the next step comes out: another peer of the same
//! upstream, the request handed to legacy, the answer passed on as it is, or banyan's
//! own 502/504. Pure: the transports count and observe, then ask `next`.

use crate::metrics::FallbackReason;

/// Attempts per request, whatever the retry rules say: banyan's own path stops here, and
/// Pingora's `max_retries` is set to it.
pub const MAX_ATTEMPTS: usize = 8;

/// How one attempt failed, as either transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// No connection: nothing was sent.
    Connect { timed_out: bool },
    /// The upstream answered 502, 503 or 504.
    Status(u16),
    /// The answer's head could not be framed without doubt.
    BadAnswer,
    /// Sent (at least in part), then cut or out of time before the answer's head.
    Exchange { timed_out: bool },
}

/// Where the request stands when an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The attempt was on the route's target, not yet handed to legacy.
    pub on_target: bool,
    /// The route sends a failed target's requests to legacy (`fallback`).
    pub falls_back: bool,
    /// The route retries this request's method on legacy after it was sent
    /// (`retry_on` methods).
    pub retries_method: bool,
    /// The request can be sent again: its body is still held and the client has not had
    /// a byte of an answer.
    pub replayable: bool,
    /// Attempts so far, this one included.
    pub attempts: usize,
    /// Connections that failed so far, this one included.
    pub connect_failures: usize,
    /// Peers of the upstream tried.
    pub peers: usize,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another peer of the same upstream.
    OtherPeer,
    /// Hand the request to legacy, counted with this reason.
    FallBack(FallbackReason),
    /// Give the client the upstream's answer as it is (a 502–504 not retried).
    PassOn,
    /// Answer the client with this status (502, or 504 when time ran out).
    Fail(u16),
}

/// The status for an upstream that failed: 504 when it ran out of time, else 502.
pub fn gateway_status(timed_out: bool) -> u16 {
    if timed_out {
        504
    } else {
        502
    }
}

impl Standing {
    /// A target that failed after the request was sent may have it retried on legacy:
    /// the route's listed methods, a body that can be sent again, once.
    fn may_retry_on_legacy(&self) -> bool {
        self.on_target && self.retries_method && self.replayable && self.within_budget()
    }

    fn within_budget(&self) -> bool {
        self.attempts < MAX_ATTEMPTS
    }
}

/// The one place a failed attempt is retried, handed to legacy, or answered.
pub fn next(at: &Standing, failed: Failed) -> Next {
    match failed {
        Failed::Connect { timed_out } => {
            if !at.within_budget() {
                Next::Fail(gateway_status(timed_out))
            } else if at.on_target && at.falls_back {
                // Nothing was sent, so whatever the method.
                Next::FallBack(FallbackReason::Connect)
            } else if at.connect_failures < at.peers {
                Next::OtherPeer
            } else {
                Next::Fail(gateway_status(timed_out))
            }
        }
        Failed::Status(_) if at.may_retry_on_legacy() => Next::FallBack(FallbackReason::Status),
        Failed::Status(_) => Next::PassOn,
        Failed::BadAnswer if at.may_retry_on_legacy() => Next::FallBack(FallbackReason::Error),
        Failed::BadAnswer => Next::Fail(502),
        Failed::Exchange { timed_out } if at.may_retry_on_legacy() => {
            Next::FallBack(if timed_out {
                FallbackReason::Timeout
            } else {
                FallbackReason::Error
            })
        }
        Failed::Exchange { timed_out } => Next::Fail(gateway_status(timed_out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Standing {
        Standing {
            on_target: true,
            falls_back: true,
            retries_method: true,
            replayable: true,
            attempts: 1,
            connect_failures: 0,
            peers: 1,
        }
    }

    #[test]
    fn a_target_that_cannot_be_reached_hands_the_request_to_legacy() {
        let at = Standing {
            connect_failures: 1,
            // Even a POST with its body gone: nothing was sent.
            retries_method: false,
            replayable: false,
            ..target()
        };
        let refused = Failed::Connect { timed_out: false };
        assert_eq!(next(&at, refused), Next::FallBack(FallbackReason::Connect));
        let no_fallback = Standing {
            falls_back: false,
            ..at
        };
        assert_eq!(next(&no_fallback, refused), Next::Fail(502));
        let timed_out = Failed::Connect { timed_out: true };
        assert_eq!(next(&no_fallback, timed_out), Next::Fail(504));
    }

    #[test]
    fn other_peers_are_tried_before_giving_up() {
        let legacy = Standing {
            on_target: false,
            peers: 3,
            connect_failures: 1,
            ..target()
        };
        let refused = Failed::Connect { timed_out: false };
        assert_eq!(next(&legacy, refused), Next::OtherPeer);
        let all_tried = Standing {
            connect_failures: 3,
            ..legacy
        };
        assert_eq!(next(&all_tried, refused), Next::Fail(502));
        let spent = Standing {
            attempts: MAX_ATTEMPTS,
            ..legacy
        };
        assert_eq!(next(&spent, refused), Next::Fail(502));
    }

    #[test]
    fn a_target_that_failed_after_sending_is_retried_on_legacy_only_when_allowed() {
        let cases = [
            (Failed::Status(503), Next::FallBack(FallbackReason::Status)),
            (Failed::BadAnswer, Next::FallBack(FallbackReason::Error)),
            (
                Failed::Exchange { timed_out: true },
                Next::FallBack(FallbackReason::Timeout),
            ),
            (
                Failed::Exchange { timed_out: false },
                Next::FallBack(FallbackReason::Error),
            ),
        ];
        for (failed, want) in cases {
            assert_eq!(next(&target(), failed), want, "{failed:?}");
        }
        let not_listed = Standing {
            retries_method: false,
            ..target()
        };
        let body_gone = Standing {
            replayable: false,
            ..target()
        };
        let legacy = Standing {
            on_target: false,
            ..target()
        };
        let spent = Standing {
            attempts: MAX_ATTEMPTS,
            ..target()
        };
        for at in [not_listed, body_gone, legacy, spent] {
            assert_eq!(next(&at, Failed::Status(502)), Next::PassOn, "{at:?}");
            assert_eq!(next(&at, Failed::BadAnswer), Next::Fail(502), "{at:?}");
            let cut = Failed::Exchange { timed_out: false };
            assert_eq!(next(&at, cut), Next::Fail(502), "{at:?}");
            let slow = Failed::Exchange { timed_out: true };
            assert_eq!(next(&at, slow), Next::Fail(504), "{at:?}");
        }
    }
}

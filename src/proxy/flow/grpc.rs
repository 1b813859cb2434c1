//! gRPC as the request flow sees it: which requests are gRPC calls, the status a call
//! ended with (`grpc-status`, in the trailers, or in the head of a trailers-only answer),
//! and what that status counts as. A call's HTTP status is 200 whatever happened, so a
//! gRPC error the server side is to blame for (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
//! INTERNAL, UNAVAILABLE, DATA_LOSS) is counted as the 5xx the gRPC-over-HTTP mapping
//! gives it — in `banyan_requests_total`, the rates, the guard and a ramp's gates —
//! while a client's error (INVALID_ARGUMENT, NOT_FOUND, …) counts as the 4xx it maps to.

use std::time::Duration;

use http::HeaderMap;

/// The seventeen status codes' names, by code, as `banyan_grpc_requests_total` and the
/// access log write them.
pub const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub const UNAVAILABLE: u8 = 14;

/// A request whose `content-type` is `application/grpc` or `application/grpc+…`.
pub fn is_call(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.len() >= 16
                && ct[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// `grpc-status` in a head or trailers; a value that is not a known code is UNKNOWN, as
/// gRPC's clients read it.
pub fn status_in(headers: &HeaderMap) -> Option<u8> {
    let v = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|t| t.trim().parse::<u8>().ok())
            .filter(|c| usize::from(*c) < CODES.len())
            .unwrap_or(2),
    )
}

pub fn name(code: u8) -> &'static str {
    CODES.get(usize::from(code)).copied().unwrap_or("UNKNOWN")
}

/// The HTTP status a finished call counts as: `http` (what the client got) unless the
/// call ended with a gRPC error, which counts as its HTTP mapping. A call that answered
/// 200 and never said how it ended (a stream cut before its trailers) is a 502.
pub fn counted_status(http: u16, grpc: Option<u8>) -> u16 {
    match (http, grpc) {
        (200, None) => 502,
        (_, None) => http,
        (_, Some(code)) => match code {
            0 => 200,
            1 => 499,
            3 | 9 | 11 => 400,
            5 => 404,
            6 | 10 => 409,
            7 => 403,
            8 => 429,
            16 => 401,
            4 => 504,
            12 => 501,
            14 => 503,
            _ => 500,
        },
    }
}

/// The status banyan's own answer to a call carries (a refusal, a failed upstream),
/// after gRPC's mapping of HTTP statuses; `deadline_passed` when the call's
/// `grpc-timeout` ran out.
pub fn code_for(http: u16, deadline_passed: bool) -> u8 {
    if deadline_passed {
        return 4;
    }
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 => 8,
        502..=504 => UNAVAILABLE,
        _ => 2,
    }
}

/// A call's `grpc-timeout` (`TimeoutValue TimeoutUnit`: at most eight digits, then one
/// of `H M S m u n`).
pub fn timeout_in(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn calls_are_told_by_their_content_type() {
        assert!(is_call(&headers(&[("content-type", "application/grpc")])));
        assert!(is_call(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(is_call(&headers(&[("content-type", "Application/GRPC")])));
        assert!(!is_call(&headers(&[("content-type", "application/grpcx")])));
        assert!(!is_call(&headers(&[("content-type", "application/json")])));
        assert!(!is_call(&headers(&[])));
    }

    #[test]
    fn statuses_are_read_and_unknown_values_are_unknown() {
        assert_eq!(status_in(&headers(&[("grpc-status", "0")])), Some(0));
        assert_eq!(status_in(&headers(&[("grpc-status", "14")])), Some(14));
        assert_eq!(status_in(&headers(&[("grpc-status", "99")])), Some(2));
        assert_eq!(status_in(&headers(&[("grpc-status", "x")])), Some(2));
        assert_eq!(status_in(&headers(&[])), None);
        assert_eq!(name(14), "UNAVAILABLE");
        assert_eq!(name(200), "UNKNOWN");
    }

    #[test]
    fn server_side_errors_count_as_5xx_and_client_errors_as_4xx() {
        for code in [2, 4, 12, 13, 14, 15] {
            assert!(counted_status(200, Some(code)) >= 500, "{}", name(code));
        }
        for code in [1, 3, 5, 6, 7, 8, 9, 10, 11, 16] {
            let s = counted_status(200, Some(code));
            assert!((400..500).contains(&s), "{}", name(code));
        }
        assert_eq!(counted_status(200, Some(0)), 200);
        assert_eq!(counted_status(200, None), 502);
        // banyan's own answers (no trailers) keep their status.
        assert_eq!(counted_status(503, None), 503);
    }

    #[test]
    fn timeouts_are_read_as_grpc_writes_them() {
        let t = |v: &'static str| timeout_in(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn banyans_own_answers_carry_grpcs_mapping() {
        assert_eq!(code_for(503, false), UNAVAILABLE);
        assert_eq!(code_for(504, true), 4);
        assert_eq!(code_for(429, false), 8);
    }
}

//! The guard's decision, a pure function: with at least `min_requests` target outcomes in
//! the window, an error rate or a p99 above the route's limits trips it, and the reason
//! names the figure that did.

use super::WindowStats;
use crate::routes::GuardDef;

/// `Some(reason)` when the route must be rolled back.
pub fn verdict(g: &GuardDef, s: &WindowStats) -> Option<String> {
    if s.requests == 0 || s.requests < g.min_requests {
        return None;
    }
    let window = humantime::format_duration(g.window);
    if let Some(max) = g.max_error_rate {
        let rate = s.errors as f64 / s.requests as f64;
        if rate > max {
            return Some(format!(
                "guard: target error rate {:.1} % ({} of {} requests in the last {window}) is above max_error_rate {} %",
                rate * 100.0,
                s.errors,
                s.requests,
                max * 100.0
            ));
        }
    }
    if let (Some(max), Some(p99)) = (g.max_p99_ms, s.p99_ms) {
        if p99 > max {
            return Some(format!(
                "guard: target p99 {p99:.0} ms ({} requests in the last {window}) is above max_p99_ms {max}",
                s.requests
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn guard() -> GuardDef {
        GuardDef {
            max_error_rate: Some(0.05),
            max_p99_ms: Some(800.0),
            min_requests: 100,
            window: Duration::from_secs(60),
        }
    }

    fn stats(requests: u64, errors: u64, p99: f64) -> WindowStats {
        WindowStats {
            requests,
            errors,
            p99_ms: Some(p99),
        }
    }

    #[test]
    fn nothing_below_min_requests() {
        assert_eq!(verdict(&guard(), &stats(99, 99, 5000.0)), None);
    }

    #[test]
    fn error_rate_above_the_limit_trips() {
        let r = verdict(&guard(), &stats(100, 6, 10.0)).expect("tripped");
        assert!(r.contains("error rate 6.0 %"), "{r}");
        assert!(r.contains("6 of 100 requests in the last 1m"), "{r}");
        assert!(r.contains("max_error_rate 5 %"), "{r}");
        assert_eq!(
            verdict(&guard(), &stats(100, 5, 10.0)),
            None,
            "at the limit is fine"
        );
    }

    #[test]
    fn p99_above_the_limit_trips() {
        let r = verdict(&guard(), &stats(200, 0, 950.0)).expect("tripped");
        assert!(r.contains("p99 950 ms"), "{r}");
        assert!(r.contains("max_p99_ms 800"), "{r}");
        assert_eq!(verdict(&guard(), &stats(200, 0, 800.0)), None);
    }

    #[test]
    fn only_configured_limits_apply() {
        let mut g = guard();
        g.max_p99_ms = None;
        assert_eq!(verdict(&g, &stats(200, 0, 99_999.0)), None);
        g.max_error_rate = None;
        g.max_p99_ms = Some(100.0);
        assert!(verdict(&g, &stats(200, 200, 50.0)).is_none());
    }
}

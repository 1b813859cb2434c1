//! A ramp step's judgement, pure: the step's figures on both sides (counted since the
//! step began, forced cohorts apart), each gate against its limit with legacy as the
//! baseline, and the verdict. Not enough data is inconclusive: it holds, never advances
//! and never fails.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::routes::ramp::RampDef;

/// Latencies under this count as this much in the p99 ratio, so that sub-millisecond
/// noise on a fast legacy cannot fail a gate.
const P99_FLOOR_MS: f64 = 1.0;

/// Both sides' figures over the step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub legacy_requests: u64,
    pub legacy_errors: u64,
    pub legacy_p99_ms: Option<f64>,
    /// Target-bound requests, fallbacks included (they failed on the target).
    pub target_requests: u64,
    /// 5xx answers and fallbacks.
    pub target_errors: u64,
    pub target_p99_ms: Option<f64>,
    /// Shadow copies compared, and of those, matches.
    pub compared: u64,
    pub matched: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Result {
    Pass,
    Fail,
    Inconclusive,
}

/// One gate's reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Gate {
    /// `requests`, `error_delta`, `p99_ratio`, `match_rate`.
    pub gate: String,
    pub figure: Option<f64>,
    /// The bound: at least (`requests`, `match_rate`) or at most (the others).
    pub limit: f64,
    pub result: Result,
}

impl Gate {
    /// "error_delta 0.0950 > 0.005", "requests 18 of 50", "p99_ratio n/a".
    pub fn describe(&self) -> String {
        let figure = match (self.figure, self.gate.as_str()) {
            (None, _) => "n/a".to_string(),
            (Some(f), "requests") => format!("{f:.0}"),
            (Some(f), _) => format!("{f:.4}"),
        };
        let op = match (self.gate.as_str(), self.result) {
            (_, Result::Inconclusive) | ("requests", _) => "of",
            ("match_rate", Result::Fail) => "<",
            ("match_rate", _) => "≥",
            (_, Result::Fail) => ">",
            (_, _) => "≤",
        };
        format!("{} {figure} {op} {}", self.gate, self.limit)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every gate passes and the hold is over.
    Advance,
    /// Not yet: why.
    Hold(String),
    /// A gate failed: which, with its figure.
    Fail(String),
}

fn rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    }
}

/// Every gate of `def` on `f`.
pub fn gates(def: &RampDef, f: &Figures) -> Vec<Gate> {
    let enough = f.target_requests >= def.min_requests;
    let judged = |pass: bool| match (enough, pass) {
        (false, _) => Result::Inconclusive,
        (true, true) => Result::Pass,
        (true, false) => Result::Fail,
    };
    let mut out = vec![Gate {
        gate: "requests".into(),
        figure: Some(f.target_requests as f64),
        limit: def.min_requests as f64,
        result: if enough {
            Result::Pass
        } else {
            Result::Inconclusive
        },
    }];
    // Legacy without requests (a high step) is a baseline of no errors.
    let delta = rate(f.target_errors, f.target_requests) - rate(f.legacy_errors, f.legacy_requests);
    out.push(Gate {
        gate: "error_delta".into(),
        figure: Some(delta),
        limit: def.max_error_delta,
        result: judged(delta <= def.max_error_delta + 1e-12),
    });
    if let Some(max) = def.max_p99_ratio {
        let ratio = match (f.target_p99_ms, f.legacy_p99_ms) {
            (Some(t), Some(l)) if f.legacy_requests >= def.min_requests.min(100) => {
                Some(t.max(P99_FLOOR_MS) / l.max(P99_FLOOR_MS))
            }
            _ => None,
        };
        out.push(Gate {
            gate: "p99_ratio".into(),
            figure: ratio,
            limit: max,
            result: match ratio {
                None => Result::Inconclusive,
                Some(r) => judged(r <= max),
            },
        });
    }
    if let Some(min) = def.min_match_rate {
        let rate = (f.compared > 0).then(|| f.matched as f64 / f.compared as f64);
        out.push(Gate {
            gate: "match_rate".into(),
            figure: rate,
            limit: min,
            result: match rate {
                Some(r) if f.compared >= def.min_compared => {
                    if r >= min {
                        Result::Pass
                    } else {
                        Result::Fail
                    }
                }
                _ => Result::Inconclusive,
            },
        });
    }
    out
}

/// The step's verdict: a failing gate fails it at once; otherwise it advances when every
/// gate passes and `held` has reached the hold.
pub fn verdict(def: &RampDef, gates: &[Gate], held: Duration) -> Verdict {
    if let Some(g) = gates.iter().find(|g| g.result == Result::Fail) {
        return Verdict::Fail(g.describe());
    }
    let open: Vec<String> = gates
        .iter()
        .filter(|g| g.result == Result::Inconclusive)
        .map(Gate::describe)
        .collect();
    if !open.is_empty() {
        return Verdict::Hold(format!("not enough evidence: {}", open.join(", ")));
    }
    if held < def.hold {
        return Verdict::Hold(format!(
            "holding: {}s of {}s",
            held.as_secs(),
            def.hold.as_secs()
        ));
    }
    Verdict::Advance
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ramp::OnFailure;

    fn def() -> RampDef {
        RampDef {
            steps: vec![100, 500, 10_000],
            hold: Duration::from_secs(60),
            min_requests: 100,
            max_error_delta: 0.005,
            max_p99_ratio: Some(1.25),
            min_match_rate: Some(0.999),
            min_compared: 50,
            on_failure: OnFailure::Rollback,
        }
    }

    fn healthy() -> Figures {
        Figures {
            legacy_requests: 1000,
            legacy_errors: 10,
            legacy_p99_ms: Some(20.0),
            target_requests: 200,
            target_errors: 2,
            target_p99_ms: Some(22.0),
            compared: 100,
            matched: 100,
        }
    }

    const LONG: Duration = Duration::from_secs(61);

    #[test]
    fn a_healthy_step_advances_after_its_hold() {
        let g = gates(&def(), &healthy());
        assert!(g.iter().all(|g| g.result == Result::Pass), "{g:?}");
        assert_eq!(verdict(&def(), &g, LONG), Verdict::Advance);
        assert!(
            matches!(verdict(&def(), &g, Duration::from_secs(5)), Verdict::Hold(h) if h.contains("5s of 60s"))
        );
    }

    #[test]
    fn errors_are_judged_against_legacy() {
        // 1 % on both sides passes: the baseline is legacy, not zero.
        let mut f = healthy();
        f.target_errors = 20;
        f.legacy_errors = 100;
        let g = gates(&def(), &f);
        assert_eq!(verdict(&def(), &g, LONG), Verdict::Advance);
        // 10 % against legacy's 1 % fails at once, before the hold.
        f.legacy_errors = 10;
        let g = gates(&def(), &f);
        let v = verdict(&def(), &g, Duration::ZERO);
        assert!(
            matches!(&v, Verdict::Fail(why) if why.starts_with("error_delta 0.0900 >")),
            "{v:?}"
        );
    }

    #[test]
    fn too_little_traffic_holds_without_failing() {
        let mut f = healthy();
        f.target_requests = 10;
        f.target_errors = 10;
        let g = gates(&def(), &f);
        assert!(g.iter().all(|g| g.result != Result::Fail), "{g:?}");
        assert!(
            matches!(verdict(&def(), &g, LONG), Verdict::Hold(h) if h.contains("not enough evidence"))
        );
    }

    #[test]
    fn wrong_answers_fail_the_match_rate_once_enough_are_compared() {
        let mut f = healthy();
        f.matched = 90;
        let g = gates(&def(), &f);
        assert!(
            matches!(verdict(&def(), &g, LONG), Verdict::Fail(w) if w.starts_with("match_rate 0.9000 <"))
        );
        f.compared = 20;
        f.matched = 10;
        let g = gates(&def(), &f);
        assert!(matches!(verdict(&def(), &g, LONG), Verdict::Hold(_)));
    }

    #[test]
    fn slow_targets_fail_the_p99_ratio_and_tiny_latencies_do_not() {
        let mut f = healthy();
        f.target_p99_ms = Some(30.0);
        let g = gates(&def(), &f);
        assert!(
            matches!(verdict(&def(), &g, LONG), Verdict::Fail(w) if w.starts_with("p99_ratio 1.5000"))
        );
        f.legacy_p99_ms = Some(0.2);
        f.target_p99_ms = Some(0.9);
        let g = gates(&def(), &f);
        assert_eq!(verdict(&def(), &g, LONG), Verdict::Advance);
    }
}

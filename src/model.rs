//! Plain model types both planes share: a route's override as the control plane sets it
//! and the snapshot carries it to the data path. Neither plane owns them, so neither
//! imports the other for them.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::clock::now_rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Guard,
    /// A ramp's failing gate.
    Ramp,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Guard => "guard",
            Trigger::Ramp => "ramp",
        }
    }
}

/// One route's override, as plain data (percent in basis points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub percent_bp: u16,
    /// False pauses the route's shadow traffic.
    pub shadow: bool,
    pub trigger: Trigger,
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

impl Override {
    pub fn new(percent_bp: u16, shadow: bool, trigger: Trigger, reason: &str) -> Self {
        Override {
            percent_bp,
            shadow,
            trigger,
            reason: reason.to_string(),
            at: now_rfc3339(),
        }
    }

    /// What `rollback` (by hand or by the guard) writes: 0 % with shadow paused. It sends
    /// every request to legacy, forced cohorts too; `set 0` leaves the cohorts be.
    pub fn is_rollback(&self) -> bool {
        self.percent_bp == 0 && !self.shadow
    }

    /// Seconds since the override was set, when its time parses.
    pub fn age_seconds(&self) -> Option<u64> {
        let at = humantime::parse_rfc3339_weak(&self.at).ok()?;
        SystemTime::now()
            .duration_since(at)
            .ok()
            .map(|d| d.as_secs())
    }
}

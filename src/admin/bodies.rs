//! The JSON bodies of the admin API, requests and answers, as types: the handlers
//! serialize these and the OpenAPI document (`openapi.rs`) derives its schemas from them,
//! so the two cannot drift apart.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::control::RouteChange;
use crate::shadow::difflog::DiffRecord;

/// `POST /api/v1/routes/{name}/percent`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PercentBody {
    /// 0 to 100, at most two decimals.
    pub percent: f64,
    /// Why, for status and the audit log.
    pub reason: Option<String>,
}

/// The optional body of a rollback (an empty body means no reason).
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub reason: Option<String>,
}

/// `POST /api/v1/routes/{name}/promote`.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    pub reason: Option<String>,
    /// Straight to the last step; default: the next one.
    pub full: Option<bool>,
}

/// Any refusal: what was wrong, in a sentence.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /api/v1/reload` done: the generation now serving.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Reloaded {
    pub generation: u64,
}

/// `POST /api/v1/reload` refused: the route files' errors; the last good routes serve on.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReloadRefused {
    pub error: String,
    /// `file:line:column: error: message`, one per error.
    pub errors: Vec<String>,
}

/// An override change in force in this process that `overrides.json` could not keep.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct NotPersisted {
    pub error: String,
    /// Always true: the change is in force until this process stops.
    pub applied: bool,
    pub version: u64,
    pub changes: Vec<RouteChange>,
}

/// `GET /api/v1/diffs`: the newest mismatches first.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Diffs {
    pub diffs: Vec<DiffRecord>,
    /// The diff log file, where older ones are.
    pub file: String,
}

/// `POST /api/v1/tables`: a route table to store and serve.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// File name (`NAME.toml`) → the file's text, as in a routes folder.
    pub files: std::collections::BTreeMap<String, String>,
    /// Why, for the history and the audit log.
    pub reason: Option<String>,
}

/// A push refused: the table's errors, `file:line:column: error: message`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PushRefused {
    pub error: String,
    pub errors: Vec<String>,
}

/// `GET /api/v1/tables`: the stored route tables, newest first.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Tables {
    /// The table this replica serves (0: its routes folder).
    pub serving: u64,
    pub tables: Vec<crate::control::tables::TableInfo>,
}

/// `GET /api/v1/audit`: the latest changes of routing state, oldest first.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Audit {
    /// Where they were read: the fleet's store, or this replica's `audit.jsonl`.
    pub from: String,
    /// One object per change, as `audit.jsonl` holds them (with the fleet's store, each
    /// names its `replica`).
    pub entries: Vec<serde_json::Value>,
}

//! The route tables and the audit log of the admin API: `POST /api/v1/tables` (push),
//! `GET /api/v1/tables` (history), `GET /api/v1/tables/{n}`, `POST
//! /api/v1/tables/{n}/revert`, and `GET /api/v1/audit`.

use http::{Response, StatusCode};

use super::bodies::{Audit, PushBody, PushRefused, ReasonBody, Tables};
use super::{json, json_error, AdminRequest, FLEET_WAIT};
use crate::control::audit::Who;
use crate::control::store::StoreError;
use crate::control::tables::{PushError, Pushed};
use crate::control::Control;

/// Audit entries answered at most.
const MAX_AUDIT: usize = 1000;

fn pushed(control: &Control, result: Result<Pushed, PushError>) -> Response<Vec<u8>> {
    match result {
        Ok(mut p) => {
            if p.revision > 0 {
                // Answered once every live replica serves the table, or after the wait.
                p.fleet = Some(control.store.wait_applied(p.revision, FLEET_WAIT));
            }
            json(StatusCode::OK, &p)
        }
        Err(PushError::Invalid(errors)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &PushRefused {
                error: PushError::Invalid(Vec::new()).to_string(),
                errors,
            },
        ),
        Err(e @ PushError::NotInStore) => json_error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ PushError::Unknown(_)) => json_error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(PushError::Store(e @ StoreError::Conflict { .. })) => {
            json_error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(PushError::Store(e)) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

pub fn push(control: &Control, req: &AdminRequest, who: &Who) -> Response<Vec<u8>> {
    match serde_json::from_slice::<PushBody>(&req.body) {
        Ok(b) => {
            let reason = b.reason.unwrap_or_else(|| "push".to_string());
            pushed(control, control.push_routes(b.files, &reason, who, None))
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    }
}

pub fn history(control: &Control) -> Response<Vec<u8>> {
    match control.route_history() {
        Ok(tables) => json(
            StatusCode::OK,
            &Tables {
                serving: control.table_number(),
                tables,
            },
        ),
        Err(e) => pushed(control, Err(e)),
    }
}

/// `/api/v1/tables/{n}` and `/api/v1/tables/{n}/revert`.
pub fn one(control: &Control, req: &AdminRequest, rest: &str, who: &Who) -> Response<Vec<u8>> {
    let (number, action) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(number) = number.parse::<u64>() else {
        return json_error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    match (action, req.method == http::Method::POST) {
        ("", false) => match control.route_history() {
            Err(e) => pushed(control, Err(e)),
            Ok(_) => match control.store.route_tables() {
                Ok(all) => match all.into_iter().find(|t| t.number == number) {
                    Some(t) => json(StatusCode::OK, &t),
                    None => pushed(control, Err(PushError::Unknown(number))),
                },
                Err(e) => pushed(control, Err(e.into())),
            },
        },
        ("revert", true) => {
            let reason = match super::optional_body::<ReasonBody>(&req.body) {
                Ok(b) => b.reason,
                Err(e) => {
                    return json_error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}"))
                }
            };
            let reason = reason.unwrap_or_else(|| format!("revert to table {number}"));
            pushed(control, control.revert_routes(number, &reason, who))
        }
        ("" | "revert", _) => json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

pub fn audit(control: &Control, query: &str) -> Response<Vec<u8>> {
    let mut limit = 50;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if n > 0 => limit = n.min(MAX_AUDIT),
                _ => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "limit must be a positive whole number",
                    )
                }
            },
            other => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown query parameter `{other}`"),
                )
            }
        }
    }
    let (entries, from) = control.store.audit_entries(limit);
    json(StatusCode::OK, &Audit { from, entries })
}

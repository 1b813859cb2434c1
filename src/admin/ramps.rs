//! The ramp verbs of the admin API: `POST /api/v1/routes/{name}/ramp/{start|pause|resume|abort}`
//! (body: an optional `{"reason"}`) and `POST /api/v1/routes/{name}/promote` (body:
//! optional `{"reason", "full"}`).

use http::{Response, StatusCode};

use super::bodies::PromoteBody;
use super::bodies::ReasonBody;
use super::{bad_body, json, json_error, optional_body, reason_or, AdminRequest};
use crate::control::audit::Who;
use crate::control::ramp::{RampError, RampOutcome};
use crate::control::Control;

/// Answers `rest` (after `/api/v1/routes/`) when it names a ramp verb.
pub fn handle(
    control: &Control,
    req: &AdminRequest,
    rest: &str,
    who: &Who,
) -> Option<Response<Vec<u8>>> {
    let (name, verb) = match rest.split('/').collect::<Vec<_>>().as_slice() {
        [name, "ramp", verb] => (name.to_string(), *verb),
        [name, "promote"] => (name.to_string(), "promote"),
        _ => return None,
    };
    if !matches!(verb, "start" | "pause" | "resume" | "abort" | "promote") {
        return Some(json_error(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    if req.method != http::Method::POST {
        return Some(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ));
    }
    if verb == "promote" {
        let body = match optional_body::<PromoteBody>(&req.body) {
            Ok(b) => b,
            Err(e) => return Some(bad_body(e)),
        };
        let full = body.full.unwrap_or(false);
        let default = if full {
            "promoted to the last step"
        } else {
            "promoted to the next step"
        };
        let reason = reason_or(body.reason, default);
        return Some(answer(
            control,
            control.ramp_promote(&name, full, &reason, who),
        ));
    }
    let reason = match optional_body::<ReasonBody>(&req.body) {
        Ok(b) => reason_or(b.reason, &format!("ramp {verb}")),
        Err(e) => return Some(bad_body(e)),
    };
    let result = match verb {
        "start" => control.ramp_start(&name, &reason, who),
        "pause" => control.ramp_pause(&name, &reason, who),
        "resume" => control.ramp_resume(&name, &reason, who),
        _ => control.ramp_abort(&name, &reason, who),
    };
    Some(answer(control, result))
}

fn answer(control: &Control, result: Result<RampOutcome, RampError>) -> Response<Vec<u8>> {
    match result {
        // In force in this process, but lost on a restart: as an override's, a 500.
        Ok(o) if o.persist_error.is_some() => json(StatusCode::INTERNAL_SERVER_ERROR, &o),
        Ok(mut o) => {
            if control.etcd.is_some() && o.revision > 0 {
                // Answered once every live replica serves the move, or after the wait.
                o.fleet = Some(control.store.wait_applied(o.revision, super::FLEET_WAIT));
            }
            json(StatusCode::OK, &o)
        }
        Err(e @ (RampError::UnknownRoute(_) | RampError::NoRamp(_))) => {
            json_error(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e @ (RampError::State(_) | RampError::Conflict(_))) => {
            json_error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e @ RampError::Unavailable(_)) => {
            json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

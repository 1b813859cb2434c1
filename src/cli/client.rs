//! Talking to a running proxy's admin API: where it is (`--admin`, else the config's
//! `admin.listen`), the token (`--token`, `BANYAN_ADMIN_TOKEN`, `admin.token_file`), and
//! telling "cannot reach it" apart from "it said no".

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::common::cwd;
use crate::admin::CLIENT_HEADER;
use crate::config::{CliSettings, DEFAULT_CONFIG_PATH};

/// How long a command waits for the admin API before it counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(clap::Args, Clone)]
pub struct AdminArgs {
    /// The proxy's config file (for the admin address, token and state folder).
    #[arg(long, short = 'c', default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// The admin API, e.g. http://127.0.0.1:9090 (default: the config's admin.listen).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Bearer token (default: BANYAN_ADMIN_TOKEN, then admin.token_file).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

pub struct Admin {
    pub url: String,
    token: Option<String>,
    agent: ureq::Agent,
    pub settings: CliSettings,
}

#[derive(Debug)]
pub enum CallError {
    /// Nothing answered: refused, unresolvable, or no answer in time.
    Unreachable(String),
    /// The proxy answered with an error.
    Refused {
        status: u16,
        message: String,
        body: Value,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "cannot reach the admin API ({why})"),
            CallError::Refused {
                status, message, ..
            } => write!(f, "{message} (HTTP {status})"),
        }
    }
}

impl Admin {
    pub fn new(args: &AdminArgs) -> anyhow::Result<Admin> {
        let settings = CliSettings::load(&args.config, &cwd())?;
        let url = args
            .admin
            .clone()
            .unwrap_or_else(|| settings.admin_url())
            .trim_end_matches('/')
            .to_string();
        let token = match &args.token {
            Some(t) => Some(t.clone()),
            None => crate::config::admin_token(settings.token_file.as_deref())?,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Admin {
            url,
            token,
            agent,
            settings,
        })
    }

    /// GET or POST (with an optional JSON body) and the JSON answer.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.url);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = if method == "GET" {
            let mut req = self.agent.get(&url).header(CLIENT_HEADER, "cli");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        } else {
            let mut req = self.agent.post(&url).header(CLIENT_HEADER, "cli");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            // Always JSON: a tokenless admin API takes no other changes (`admin::origin`).
            req.send_json(body.unwrap_or_else(|| Value::Object(Default::default())))
        };
        let mut resp = result.map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_) => CallError::Unreachable(e.to_string()),
            other => CallError::Refused {
                status: 0,
                message: other.to_string(),
                body: Value::Null,
            },
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value.get("error").and_then(Value::as_str).map_or_else(
            || format!("the admin API answered {status}"),
            str::to_string,
        );
        Err(CallError::Refused {
            status,
            message,
            body: value,
        })
    }
}

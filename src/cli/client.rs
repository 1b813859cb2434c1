//! Talking to a running proxy's admin API: where it is (`--admin`, `BANYAN_ADMIN`, the
//! config's `admin.listen` — the config from `--config`, `BANYAN_CONFIG` or
//! `config/banyan.toml` here — else `http://127.0.0.1:9090`), the token (`--token`,
//! `BANYAN_ADMIN_TOKEN`, `admin.token_file`), who acts (`--actor`, `BANYAN_ACTOR`, the OS
//! user), and telling "cannot reach it" apart from "it said no".

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::common::cwd;
use crate::admin::{ACTOR_HEADER, CLIENT_HEADER};
use crate::config::{CliSettings, DEFAULT_CONFIG_PATH};

/// How long a command waits to connect to the admin API before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long it waits for an answer: more than the admin API waits for the fleet's
/// acknowledgements (3 s), so a laggard replica is reported, not taken for an outage.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Clone)]
pub struct AdminArgs {
    /// The proxy's config file, for the admin address, token and state folder (default:
    /// BANYAN_CONFIG, then config/banyan.toml when it exists here).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The admin API, e.g. http://127.0.0.1:9090 (default: BANYAN_ADMIN, then the
    /// config's admin.listen, then http://127.0.0.1:9090). `rollback --direct` takes it
    /// once per replica.
    #[arg(long, value_name = "URL")]
    pub admin: Vec<String>,
    /// Bearer token (default: BANYAN_ADMIN_TOKEN, then admin.token_file).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Who is acting, for the audit log (default: BANYAN_ACTOR, then the OS user).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}

/// Where the admin API was found, for messages: "--admin", "BANYAN_ADMIN", the config
/// file's admin.listen, or the default.
#[derive(Debug, Clone)]
pub enum Found {
    Flag,
    Env,
    Config(PathBuf),
    Default,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Flag => write!(f, "from --admin"),
            Found::Env => write!(f, "from {ADMIN_ENV}"),
            Found::Config(p) => write!(f, "admin.listen in {}", super::common::shown(p)),
            Found::Default => write!(
                f,
                "the default: no --admin, {ADMIN_ENV}, {CONFIG_ENV} or {DEFAULT_CONFIG_PATH} here"
            ),
        }
    }
}

pub const ADMIN_ENV: &str = "BANYAN_ADMIN";
pub const CONFIG_ENV: &str = "BANYAN_CONFIG";
pub const ACTOR_ENV: &str = "BANYAN_ACTOR";
/// The admin API when nothing names it.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9090";

pub struct Admin {
    pub url: String,
    /// How `url` was found.
    pub found: Found,
    token: Option<String>,
    actor: String,
    agent: ureq::Agent,
    /// The config's settings, when a config file was found.
    pub settings: Option<CliSettings>,
}

#[derive(Debug)]
pub enum CallError {
    /// Nothing answered: refused, unresolvable, or no answer in time. `at`: the URL and
    /// how it was found.
    Unreachable { at: String, why: String },
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
            CallError::Unreachable { at, why } => {
                write!(f, "cannot reach the admin API at {at}: {why}")
            }
            CallError::Refused {
                status, message, ..
            } => write!(f, "{message} (HTTP {status})"),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The config file a command reads: `--config`, then BANYAN_CONFIG (both must exist),
/// then `config/banyan.toml` when it exists here (`None` when it does not).
pub fn find_config(flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    let named = flag
        .map(|p| (p.to_path_buf(), "--config"))
        .or_else(|| env(CONFIG_ENV).map(|p| (PathBuf::from(p), CONFIG_ENV)));
    match named {
        Some((path, _)) if path.is_file() => Ok(Some(path)),
        Some((path, from)) => anyhow::bail!(
            "no config file at {} (from {from}; looked for {})",
            path.display(),
            cwd().join(&path).display()
        ),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_PATH);
            Ok(default.is_file().then_some(default))
        }
    }
}

/// The OS user, for the audit log when no actor is named.
fn os_user() -> String {
    env("USER").or_else(|| env("LOGNAME")).unwrap_or_else(|| {
        // SAFETY: getuid cannot fail.
        format!("uid {}", unsafe { libc::getuid() })
    })
}

impl Admin {
    pub fn new(args: &AdminArgs) -> anyhow::Result<Admin> {
        let config = find_config(args.config.as_deref())?;
        let settings = match &config {
            Some(path) => Some(CliSettings::load(path, &cwd())?),
            None => None,
        };
        let (url, found) = if let Some(a) = args.admin.first() {
            (a.clone(), Found::Flag)
        } else if let Some(a) = env(ADMIN_ENV) {
            (a, Found::Env)
        } else if let (Some(s), Some(path)) = (&settings, &config) {
            (s.admin_url(), Found::Config(path.clone()))
        } else {
            (DEFAULT_ADMIN.to_string(), Found::Default)
        };
        let url = url.trim_end_matches('/').to_string();
        let url = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        let token = match &args.token {
            Some(t) => Some(t.clone()),
            None => {
                crate::config::admin_token(settings.as_ref().and_then(|s| s.token_file.as_deref()))?
            }
        };
        let actor = args
            .actor
            .clone()
            .or_else(|| env(ACTOR_ENV))
            .unwrap_or_else(os_user);
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Admin {
            url,
            found,
            token,
            actor,
            agent,
            settings,
        })
    }

    /// Who acts, for the audit log.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// "http://127.0.0.1:9090 (admin.listen in config/banyan.toml)", for messages.
    pub fn described(&self) -> String {
        format!("{} ({})", self.url, self.found)
    }

    /// The settings a command needs when it works without the API (`overrides.json`,
    /// the diff log), or why there are none.
    pub fn settings(&self, why: &str) -> anyhow::Result<&CliSettings> {
        self.settings.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "cannot reach the admin API at {}: {why}; and no config file says where the state folder is: pass --config or set {CONFIG_ENV}",
                self.described()
            )
        })
    }

    /// GET or POST (with an optional JSON body) and the JSON answer.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.url);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = if method == "GET" {
            let mut req = self
                .agent
                .get(&url)
                .header(CLIENT_HEADER, "cli")
                .header(ACTOR_HEADER, &self.actor);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        } else {
            let mut req = self
                .agent
                .post(&url)
                .header(CLIENT_HEADER, "cli")
                .header(ACTOR_HEADER, &self.actor);
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
            | ureq::Error::Timeout(_) => CallError::Unreachable {
                at: self.described(),
                why: e.to_string(),
            },
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

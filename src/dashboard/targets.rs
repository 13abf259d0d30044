//! The targets API: `POST /api/targets` (add), `PATCH /api/targets/ID`
//! (pause, resume, budget, schedule, ...), `DELETE /api/targets/ID`.
//!
//! flows.yaml stays the one source of truth: each change is an edit of its
//! text (`config::edit`, comments and layout kept), checked by parsing the
//! whole new file as `baton check` would, and written atomically; the
//! running baton then reloads it as it reloads any save, so the API and a
//! hand edit can never disagree. A target whose run is in flight is not
//! removed under it: the removal is written when the run has ended.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Dashboard, error};
use crate::config::Config;
use crate::config::edit::{self, EditError};

/// One edit of flows.yaml at a time, from every request of this process.
static EDITS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a change was refused, as an HTTP answer.
enum Refused {
    /// The request itself (400).
    Request(String),
    /// The target does not exist (404).
    Missing(String),
    /// The target exists already, or flows.yaml cannot be edited now (409).
    Conflict(String),
    /// The new flows.yaml would not be valid (422), with its located
    /// problems.
    Invalid(String),
    Io(String),
}

impl From<EditError> for Refused {
    fn from(e: EditError) -> Refused {
        match e {
            EditError::Unknown(_) => Refused::Missing(e.to_string()),
            EditError::Key(..) => Refused::Request(e.to_string()),
            EditError::NoTargets | EditError::FlowStyle => Refused::Conflict(e.to_string()),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Request(m) => error(StatusCode::BAD_REQUEST, m),
            Refused::Missing(m) => error(StatusCode::NOT_FOUND, m),
            Refused::Conflict(m) => error(StatusCode::CONFLICT, m),
            Refused::Invalid(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
            Refused::Io(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// The file the running baton reads, and its text.
fn current(d: &Dashboard) -> Result<(std::path::PathBuf, String), Refused> {
    let path = d.view.config().file.clone();
    if path.as_os_str().is_empty() {
        return Err(Refused::Conflict(
            "this baton was not started from a flows.yaml".into(),
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Refused::Io(format!("cannot read {}: {e}", path.display())))?;
    Ok((path, text))
}

/// `text` read as flows.yaml; a file that does not read now (a hand edit
/// in progress) is not edited further.
fn parsed(path: &std::path::Path, text: &str) -> Result<Config, Refused> {
    Config::parse(path, text, &env).map_err(|e| {
        Refused::Conflict(format!(
            "flows.yaml has errors; fix them before changing targets from here:\n{e}"
        ))
    })
}

/// Checks `next` as flows.yaml and writes it; returns the config it reads
/// as.
fn commit(path: &std::path::Path, next: &str) -> Result<Config, Refused> {
    let cfg = Config::parse(path, next, &env).map_err(|e| Refused::Invalid(e.to_string()))?;
    edit::write_atomically(path, next)
        .map_err(|e| Refused::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(cfg)
}

fn index_of(cfg: &Config, id: &str) -> Result<usize, Refused> {
    cfg.targets
        .iter()
        .position(|t| t.id.as_str() == id)
        .ok_or_else(|| Refused::Missing(format!("no target `{id}` in flows.yaml")))
}

/// `POST /api/targets`: a JSON object of target keys (`url` at least).
pub(super) async fn add(
    State(d): State<Dashboard>,
    Json(fields): Json<serde_json::Map<String, serde_json::Value>>,
) -> Response {
    let _one = EDITS.lock().await;
    let added = (|| {
        let (path, text) = current(&d)?;
        let before = parsed(&path, &text)?;
        let next = edit::add_target(&text, &fields)?;
        let after = commit(&path, &next)?;
        // The new target is the one the old file did not have.
        let id = after
            .targets
            .iter()
            .map(|t| t.id.clone())
            .find(|id| !before.targets.iter().any(|t| t.id == *id))
            .ok_or_else(|| Refused::Conflict("no target was added".into()))?;
        Ok::<_, Refused>(id)
    })();
    match added {
        Ok(id) => {
            tracing::info!(target = %id, "target `{id}` added to flows.yaml from the dashboard");
            (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// `PATCH /api/targets/ID`: keys to set; `null` removes a key.
pub(super) async fn change(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    Json(fields): Json<serde_json::Map<String, serde_json::Value>>,
) -> Response {
    let _one = EDITS.lock().await;
    let changed = (|| {
        if fields.is_empty() {
            return Err(Refused::Request("nothing to change".into()));
        }
        let (path, text) = current(&d)?;
        let cfg = parsed(&path, &text)?;
        let i = index_of(&cfg, &id)?;
        let changes: Vec<(String, Option<serde_json::Value>)> = fields
            .into_iter()
            .map(|(k, v)| (k, (!v.is_null()).then_some(v)))
            .collect();
        let next = edit::set_keys(&text, i, &id, &changes)?;
        commit(&path, &next)?;
        Ok::<_, Refused>(changes.into_iter().map(|(k, _)| k).collect::<Vec<_>>())
    })();
    match changed {
        Ok(keys) => {
            tracing::info!(target = %id, keys = ?keys, "target `{id}` changed in flows.yaml from the dashboard");
            Json(json!({"id": id, "changed": keys})).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// `DELETE /api/targets/ID`: removed now, or, while its run is in flight,
/// when that run has ended (202).
pub(super) async fn remove(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    let running = d
        .view
        .runs()
        .into_iter()
        .find(|r| r.target.as_str() == id)
        .map(|r| r.run_id);
    if let Some(run) = running {
        // Checked now, so a wrong id is a 404, not a silent no-op later.
        let checked = current(&d).and_then(|(path, text)| {
            let cfg = parsed(&path, &text)?;
            index_of(&cfg, &id).map(drop)
        });
        if let Err(r) = checked {
            return r.into_response();
        }
        let mut changes = d.view.run_changes();
        let (d2, id2) = (d.clone(), id.clone());
        tokio::spawn(async move {
            while d2.view.runs().iter().any(|r| r.target.as_str() == id2) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
            let _one = EDITS.lock().await;
            match remove_now(&d2, &id2) {
                Ok(()) => {
                    tracing::info!(target = %id2, "target `{id2}` removed from flows.yaml after its run ended");
                }
                Err(e) => {
                    tracing::error!(target = %id2, "target `{id2}` not removed: {}", refused_text(e));
                }
            }
        });
        return (
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "removed": false, "after_run": run})),
        )
            .into_response();
    }
    let _one = EDITS.lock().await;
    match remove_now(&d, &id) {
        Ok(()) => {
            tracing::info!(target = %id, "target `{id}` removed from flows.yaml from the dashboard");
            Json(json!({"id": id, "removed": true})).into_response()
        }
        Err(r) => r.into_response(),
    }
}

fn remove_now(d: &Dashboard, id: &str) -> Result<(), Refused> {
    let (path, text) = current(d)?;
    let cfg = parsed(&path, &text)?;
    let i = index_of(&cfg, id)?;
    let next = edit::remove_target(&text, i, id)?;
    commit(&path, &next).map(drop)
}

fn refused_text(r: Refused) -> String {
    match r {
        Refused::Request(m)
        | Refused::Missing(m)
        | Refused::Conflict(m)
        | Refused::Invalid(m)
        | Refused::Io(m) => m,
    }
}

//! Several baton instances on one set of targets and accounts, coordinated
//! through Redis (`cluster: { redis: ... }`): leases with fencing tokens,
//! and the shared commit markers. Without `cluster:` none of this runs.
//!
//! Each instance keeps its own registry and its own crash-safe state; what
//! the instances share is small and lives in Redis under one namespace:
//!
//! - **Leases.** A run claims its target and its account (I10) in one Lua
//!   script: refused if either lease is held, or if the target has a
//!   commit marker; else both are set with a time to live (`lease`) and a
//!   fresh *fencing token* from one counter (`INCR`), so every claim ever
//!   granted has a larger token than the ones before it. The holder
//!   renews every third of `lease`; a renewal that finds the lease gone or
//!   someone else's, or no renewal for a whole `lease` by the local
//!   monotonic clock, cancels the run before its commit point.
//! - **Commit markers.** Immediately before `commit`, a second script
//!   checks that both leases still carry this run's token and that the
//!   target has no marker, and in the same step writes `committing` (no
//!   time to live). When the shop answers, `committed` replaces it; when it
//!   refuses, the marker goes. A marker is never taken away by time: an
//!   instance killed mid-commit leaves `committing`, and no instance runs
//!   the target again until an operator settles it. So the no-double-buy
//!   guarantee rests on the atomic check-and-mark in Redis, not on clocks;
//!   leases (time) bound only how long two instances could both *browse*
//!   one account when a holder stalls (docs/scaling.md).
//! - **An epoch.** The first instance writes a random epoch; every claim
//!   and commit check carries the epoch its instance saw. A Redis that
//!   comes back empty (restarted without persistence) has lost the
//!   markers: the epoch no longer matches, the instance stops dispatching
//!   and writes back the markers its own state knows, and says so, rather
//!   than buy again what another instance bought.
//! - **Memory.** Each instance keeps, in `STATE_DIR/cluster.json`, the
//!   epoch it last saw and a copy of every commit marker it last saw in
//!   Redis (refreshed by the heartbeat). A restarted instance that finds
//!   the epoch changed or gone knows Redis lost its data while it was
//!   away: it writes back the markers it had copied (another instance's
//!   `committing`, left by a kill inside its commit, would otherwise be
//!   lost with Redis), names them, and claims nothing until an operator
//!   runs `baton cluster accept-loss`: markers written after its last copy
//!   are unknown, so only a person can say the shop is settled.
//! - **Presence.** Each instance writes a heartbeat; the dashboard lists
//!   the live peers.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::id::{AccountId, RunId, TargetId};
use crate::registry::{CancelReason, RunControl};
use crate::state::{StateDoc, StateStore, Status};
use crate::sync::lock;

/// How long one Redis operation may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The default of [`ClusterConfig::lease`].
pub const LEASE: Duration = Duration::from_secs(15);

/// `cluster:` in flows.yaml.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`; may hold a password, so it
    /// is never logged whole (see [`ClusterConfig::redacted_url`]).
    pub redis: String,
    /// This instance's name: unique in the cluster and the same across
    /// restarts (its markers carry it).
    pub instance: String,
    /// A lease's time to live.
    pub lease: Duration,
    /// The prefix of every key baton writes.
    pub namespace: String,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &self.redacted_url())
            .field("instance", &self.instance)
            .field("lease", &self.lease)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl ClusterConfig {
    /// The Redis URL without its credentials, for logs and the dashboard.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.redis)
    }
}

/// `url` with any `user:password@` replaced: [`crate::redact::url`].
pub fn redact_url(url: &str) -> String {
    crate::redact::url(url)
}

/// Why the cluster did not grant a claim or a commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its {what} lease is held by instance `{holder}`")]
    Held { what: &'static str, holder: String },
    #[error(
        "instance `{holder}` marked it `committing` (an order in flight, or in doubt until an operator settles it there)"
    )]
    Committing { holder: String },
    #[error("instance `{holder}` already bought it (order {order})")]
    Committed { holder: String, order: String },
    #[error("this run's lease was lost (expired or taken) before its commit")]
    Lost,
    #[error("the cluster's Redis cannot be reached: {0}")]
    Unreachable(String),
    #[error(
        "the cluster's Redis lost its data (its epoch changed: restarted without persistence?); this instance dispatches nothing until it is restarted"
    )]
    StoreLost,
}

impl Refusal {
    /// Whether no target can be claimed now (rather than this one).
    pub fn stops_dispatch(&self) -> bool {
        matches!(self, Refusal::Unreachable(_) | Refusal::StoreLost)
    }
}

/// What the dashboard shows about the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterHealth {
    pub instance: String,
    /// The Redis URL without credentials.
    pub redis: String,
    /// `connecting`, `connected`, `unreachable` or `store_lost`.
    pub state: String,
    pub last_error: Option<String>,
    /// Instances whose heartbeat is recent, this one included.
    pub peers: Vec<String>,
    /// Leases this instance holds now.
    pub leases: usize,
}

/// A marker an instance's own state knows of, written back after Redis
/// lost its data (and at start).
#[derive(Clone, Debug)]
pub enum KnownMarker {
    Committing {
        target: TargetId,
        run: Option<RunId>,
    },
    Committed {
        target: TargetId,
        order: Option<String>,
    },
}

struct Inner {
    cfg: ClusterConfig,
    conn: ConnectionManager,
    /// The epoch this instance saw first; `None` until Redis answered.
    epoch: Mutex<Option<String>>,
    health: watch::Sender<ClusterHealth>,
    /// Marker writes that failed (Redis unreachable), retried by the
    /// heartbeat: `(key, value)`; a `None` value deletes ours.
    pending: Mutex<Vec<Pending>>,
    shut: CancellationToken,
    runtime: tokio::runtime::Handle,
    /// This instance's state, whose markers are written back before its
    /// first claim and after Redis lost its data.
    state: std::sync::OnceLock<Arc<StateStore>>,
    /// Whether they were written before the first claim.
    published: std::sync::atomic::AtomicBool,
    /// The last copy of the markers written to `cluster.json`, so the
    /// heartbeat writes only when they change.
    mirrored: Mutex<Option<std::collections::BTreeMap<String, String>>>,
}

/// What an instance remembers of its cluster across restarts:
/// `STATE_DIR/cluster.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Memory {
    /// The epoch this instance last held to.
    #[serde(default)]
    pub epoch: Option<String>,
    /// Set by `baton cluster accept-loss`: at its next contact the
    /// instance takes the epoch Redis has now (or starts a new one).
    #[serde(default)]
    pub accept_loss: bool,
    /// Every commit marker last seen in Redis: key (without the
    /// namespace) → value.
    #[serde(default)]
    pub markers: std::collections::BTreeMap<String, String>,
    /// When they were seen.
    #[serde(default, with = "crate::time::rfc3339_opt")]
    pub seen_at: Option<SystemTime>,
}

/// Why the cluster's handle or its memory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis` is not a Redis URL redis-rs accepts.
    #[error("cluster.redis `{url}`: {source}")]
    Redis {
        /// Without its password.
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// `STATE_DIR/cluster.json` cannot be read or written.
    #[error("`{path}`: {source}")]
    Memory {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The file [`Memory`] lives in, in the state directory.
pub const MEMORY_FILE: &str = "cluster.json";

impl Memory {
    /// The memory in `state_dir`; empty when there is none. A file that
    /// cannot be read is an error: it is what protects other instances'
    /// markers.
    pub fn load(state_dir: &std::path::Path) -> Result<Memory, ClusterError> {
        let path = state_dir.join(MEMORY_FILE);
        let err = |source: Box<dyn std::error::Error + Send + Sync>| ClusterError::Memory {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| err(e.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Memory::default()),
            Err(e) => Err(err(e.into())),
        }
    }

    /// Writes it whole or not at all.
    pub fn save(&self, state_dir: &std::path::Path) -> Result<(), ClusterError> {
        crate::state::write_atomic(state_dir, MEMORY_FILE, self).map_err(|e| ClusterError::Memory {
            path: state_dir.join(MEMORY_FILE).display().to_string(),
            source: e.into(),
        })
    }
}

#[derive(Clone, Debug)]
enum Pending {
    Committed { target: TargetId, value: String },
    Uncommitting { target: TargetId },
}

/// The handle every part of an instance shares.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// Claims the target and the account leases in one step.
/// KEYS: epoch, fence, committing, committed, lease...; ARGV: epoch,
/// instance, ttl ms.
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local e = redis.call('GET', KEYS[1])
if e ~= ARGV[1] then return {'epoch'} end
local c = redis.call('GET', KEYS[3])
if c then return {'committing', c} end
c = redis.call('GET', KEYS[4])
if c then return {'committed', c} end
for i = 5, #KEYS do
  local h = redis.call('GET', KEYS[i])
  if h then return {'held', tostring(i - 5), h} end
end
local token = redis.call('INCR', KEYS[2])
local v = token .. '|' .. ARGV[2]
for i = 5, #KEYS do redis.call('SET', KEYS[i], v, 'PX', ARGV[3]) end
return {'ok', tostring(token)}
",
    )
});

/// Extends leases that still carry this claim's value.
/// KEYS: lease...; ARGV: value, ttl ms.
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1
",
    )
});

/// The check before `commit`, and the `committing` marker, in one step.
/// KEYS: epoch, committing, committed, lease...; ARGV: epoch, lease value,
/// marker.
static COMMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'epoch' end
local c = redis.call('GET', KEYS[2]) or redis.call('GET', KEYS[3])
if c then return 'marked|' .. c end
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[2] then return 'lost' end
end
redis.call('SET', KEYS[2], ARGV[3])
return 'ok'
",
    )
});

/// `committed` replaces this instance's `committing`.
/// KEYS: committing, committed; ARGV: our prefix, committed value.
static COMMITTED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local c = redis.call('GET', KEYS[1])
if c and string.sub(c, 1, #ARGV[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[2], ARGV[2])
return 1
",
    )
});

/// Deletes the markers of KEYS that this instance wrote. ARGV: our prefix.
static FORGET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n = 0
for i = 1, #KEYS do
  local c = redis.call('GET', KEYS[i])
  if c and string.sub(c, 1, #ARGV[1]) == ARGV[1] then
    redis.call('DEL', KEYS[i]); n = n + 1
  end
end
return n
",
    )
});

/// Deletes leases that still carry this claim's value. ARGV: value.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
",
    )
});

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a run's leases come from: [`Local`] for an instance alone, or a
/// [`Cluster`] shared through Redis. The scheduler holds one and never
/// asks which.
#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// Starts the background work with this instance's state (the
    /// cluster's heartbeat and the markers its state implies). Once.
    fn start(&self, state: Arc<StateStore>);
    /// Claims `target` (and `account`) for a run of this instance.
    async fn claim(&self, target: &TargetId, account: Option<&AccountId>)
    -> Result<Claim, Refusal>;
    /// An operator settled an `in_doubt` target: `completed` or not.
    async fn settled(&self, target: &TargetId, completed: bool) -> Result<(), Refusal>;
    /// Test mode reset `targets`: their `committed` markers go.
    async fn forget_committed(&self, targets: &[TargetId]) -> Result<(), Refusal>;
    /// The shared store's health; `None` for an instance alone.
    fn health(&self) -> Option<ClusterHealth>;
    /// Its changes; `None` for an instance alone.
    fn health_changes(&self) -> Option<watch::Receiver<ClusterHealth>>;
    /// Stops the background work.
    async fn shutdown(&self);
}

/// The leases of an instance alone: its registry keeps its runs apart
/// (I1, I10), so there is nothing more to hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

#[async_trait::async_trait]
impl Leases for Local {
    fn start(&self, _: Arc<StateStore>) {}

    async fn claim(&self, _: &TargetId, _: Option<&AccountId>) -> Result<Claim, Refusal> {
        Ok(Claim::local())
    }

    async fn settled(&self, _: &TargetId, _: bool) -> Result<(), Refusal> {
        Ok(())
    }

    async fn forget_committed(&self, _: &[TargetId]) -> Result<(), Refusal> {
        Ok(())
    }

    fn health(&self) -> Option<ClusterHealth> {
        None
    }

    fn health_changes(&self) -> Option<watch::Receiver<ClusterHealth>> {
        None
    }

    async fn shutdown(&self) {}
}

#[async_trait::async_trait]
impl Leases for Cluster {
    fn start(&self, state: Arc<StateStore>) {
        self.attach_state(state);
        self.start_heartbeat();
    }

    async fn claim(
        &self,
        target: &TargetId,
        account: Option<&AccountId>,
    ) -> Result<Claim, Refusal> {
        Cluster::claim(self, target, account).await
    }

    async fn settled(&self, target: &TargetId, completed: bool) -> Result<(), Refusal> {
        Cluster::settled(self, target, completed).await
    }

    async fn forget_committed(&self, targets: &[TargetId]) -> Result<(), Refusal> {
        Cluster::forget_committed(self, targets).await
    }

    fn health(&self) -> Option<ClusterHealth> {
        Some(Cluster::health(self))
    }

    fn health_changes(&self) -> Option<watch::Receiver<ClusterHealth>> {
        Some(Cluster::health_changes(self))
    }

    async fn shutdown(&self) {
        Cluster::shutdown(self).await;
    }
}

impl Cluster {
    /// A cluster handle for `cfg`. Connects lazily: an unreachable Redis
    /// is not an error here, it only makes claims fail until it answers.
    pub fn new(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let redis = |source| ClusterError::Redis {
            url: cfg.redacted_url(),
            source,
        };
        let client = redis::Client::open(cfg.redis.as_str()).map_err(redis)?;
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, mc).map_err(redis)?;
        let health = watch::Sender::new(ClusterHealth {
            instance: cfg.instance.clone(),
            redis: cfg.redacted_url(),
            state: "connecting".into(),
            ..ClusterHealth::default()
        });
        Ok(Cluster {
            inner: Arc::new(Inner {
                cfg,
                conn,
                epoch: Mutex::new(None),
                health,
                pending: Mutex::new(Vec::new()),
                shut: CancellationToken::new(),
                runtime: tokio::runtime::Handle::current(),
                state: std::sync::OnceLock::new(),
                published: std::sync::atomic::AtomicBool::new(false),
                mirrored: Mutex::new(None),
            }),
        })
    }

    /// Gives the cluster this instance's state: what it says was bought,
    /// or may have been, is written to Redis before the first claim and
    /// again if Redis comes back empty.
    pub fn attach_state(&self, state: Arc<StateStore>) {
        let _ = self.inner.state.set(state);
    }

    /// The markers the attached state implies.
    fn known(&self) -> Vec<KnownMarker> {
        self.inner
            .state
            .get()
            .map(|s| known_markers(&s.snapshot()))
            .unwrap_or_default()
    }

    pub fn instance(&self) -> &str {
        &self.inner.cfg.instance
    }

    pub fn lease(&self) -> Duration {
        self.inner.cfg.lease
    }

    pub fn health(&self) -> ClusterHealth {
        self.inner.health.borrow().clone()
    }

    pub fn health_changes(&self) -> watch::Receiver<ClusterHealth> {
        self.inner.health.subscribe()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.inner.cfg.namespace)
    }

    fn lease_keys(&self, target: &TargetId, account: Option<&AccountId>) -> Vec<String> {
        let mut keys = vec![self.key(&format!("lease:target:{target}"))];
        if let Some(a) = account {
            keys.push(self.key(&format!("lease:account:{a}")));
        }
        keys
    }

    fn marker_keys(&self, target: &TargetId) -> (String, String) {
        (
            self.key(&format!("committing:{target}")),
            self.key(&format!("committed:{target}")),
        )
    }

    /// What this instance's markers start with.
    fn prefix(&self) -> String {
        format!("{}|", self.inner.cfg.instance)
    }

    fn set_state(&self, state: &str, error: Option<String>) {
        self.inner.health.send_if_modified(|h| {
            let changed = h.state != state || h.last_error != error;
            if changed && state != "connected" {
                tracing::warn!(
                    redis = %h.redis,
                    state,
                    error = error.as_deref().unwrap_or("-"),
                    "cluster"
                );
            }
            h.state = state.into();
            h.last_error = error;
            changed
        });
    }

    fn store_lost(&self) -> bool {
        self.inner.health.borrow().state == "store_lost"
    }

    /// Runs one Redis call, bounded; marks the cluster unreachable on
    /// failure and connected on success (unless its store was lost).
    async fn call<T>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, Refusal> {
        let mut conn = self.inner.conn.clone();
        let r = tokio::time::timeout(OP_TIMEOUT, f(&mut conn)).await;
        let r = match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {}",
                crate::time::short(OP_TIMEOUT)
            )),
        };
        match r {
            Ok(v) => {
                if !self.store_lost() {
                    self.set_state("connected", None);
                }
                Ok(v)
            }
            Err(e) => {
                if !self.store_lost() {
                    self.set_state("unreachable", Some(e.clone()));
                }
                Err(Refusal::Unreachable(e))
            }
        }
    }

    /// The epoch this instance holds to; read (or written, by the first
    /// instance) at first contact.
    async fn epoch(&self) -> Result<String, Refusal> {
        if self.store_lost() {
            return Err(Refusal::StoreLost);
        }
        let known = lock(&self.inner.epoch).clone();
        if let Some(e) = known {
            return Ok(e);
        }
        let key = self.key("epoch");
        let mut memory = self.memory()?;
        if let Some(old) = memory.as_ref().and_then(|m| m.epoch.clone()) {
            let now: Option<String> = self
                .call(async |c| redis::cmd("GET").arg(&key).query_async(c).await)
                .await?;
            if now.as_deref() != Some(old.as_str())
                && !memory.as_ref().is_some_and(|m| m.accept_loss)
            {
                return Err(self.lost_while_away(&old, now.as_deref()).await);
            }
        }
        let mine = format!("{:016x}", rand::random::<u64>());
        let e: String = self
            .call(async |c| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&mine)
                    .arg("NX")
                    .exec_async(c)
                    .await?;
                redis::cmd("GET").arg(&key).query_async(c).await
            })
            .await?;
        if let (Some(m), Some(dir)) = (memory.as_mut(), self.state_dir()) {
            if m.accept_loss {
                tracing::warn!(
                    "cluster: the operator accepted the loss of Redis's data; this instance now holds to epoch {e}"
                );
            }
            m.accept_loss = false;
            m.epoch = Some(e.clone());
            if let Err(why) = m.save(&dir) {
                tracing::warn!(error = %why, "cluster: cannot remember the epoch");
            }
        }
        *lock(&self.inner.epoch) = Some(e.clone());
        Ok(e)
    }

    /// The attached state's directory.
    fn state_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.state.get().map(|s| s.dir().to_owned())
    }

    /// The memory in the attached state's directory (`None` without one).
    /// Unreadable, it stops claims as a lost store would: it is what keeps
    /// other instances' markers.
    fn memory(&self) -> Result<Option<Memory>, Refusal> {
        let Some(dir) = self.state_dir() else {
            return Ok(None);
        };
        Memory::load(&dir).map(Some).map_err(|why| {
            tracing::error!(
                "cluster: cannot read what this instance remembers of the cluster: {why}"
            );
            self.set_state("store_lost", Some(format!("cannot read {why}")));
            Refusal::StoreLost
        })
    }

    /// Redis's epoch is not the one this instance held to when it last
    /// ran: its data was lost meanwhile.
    async fn lost_while_away(&self, old: &str, now: Option<&str>) -> Refusal {
        self.report_loss(&format!(
            "the cluster's Redis lost its data while this instance was stopped (epoch {old}, now {})",
            now.unwrap_or("none")
        ))
        .await
    }

    /// Redis lost its data (`what` says how it was seen): writes back every
    /// marker this instance had copied and its own state's, names the ones
    /// only other instances knew, says what to do, and stops claims until
    /// an operator accepts the loss and restarts it.
    async fn report_loss(&self, what: &str) -> Refusal {
        let restored = self.restore_mirror().await;
        if let Err(e) = self.republish(&self.known()).await {
            tracing::warn!(error = %e, "cluster: the markers this instance knows were not written back");
        }
        let memory = self.memory().ok().flatten().unwrap_or_default();
        let others = self.others_markers(&memory);
        let seen = memory
            .seen_at
            .map_or_else(|| "never".to_owned(), crate::time::format);
        let message = format!(
            "{what}. Wrote back this instance's own markers and {restored} from its copy of the others' (taken {seen}){}. \
             Markers written after that copy are not known to anyone: restore Redis from its AOF or RDB if you can; \
             otherwise check those targets on the shop and settle them. \
             Then run `baton cluster accept-loss` and start this instance again; until then it claims nothing. \
             Give Redis persistence (appendonly yes): see docs/scaling.md",
            if others.is_empty() {
                String::new()
            } else {
                format!("; unsafe without them: {}", others.join(", "))
            }
        );
        tracing::error!(redis = %self.inner.cfg.redacted_url(), "{message}");
        self.set_state("store_lost", Some(message));
        Refusal::StoreLost
    }

    /// The markers of other instances in `memory`: `1001 (committing by a)`.
    fn others_markers(&self, memory: &Memory) -> Vec<String> {
        let me = self.prefix();
        memory
            .markers
            .iter()
            .filter(|(_, v)| !v.starts_with(&me))
            .map(|(k, v)| {
                let (kind, target) = k.split_once(':').unwrap_or(("marker", k));
                format!("{target} ({kind} by {})", holder(Some(v)))
            })
            .collect()
    }

    /// Writes back every marker of the last copy (`SET NX`: never over
    /// one Redis has). Returns how many were written.
    async fn restore_mirror(&self) -> usize {
        let Ok(Some(memory)) = self.memory() else {
            return 0;
        };
        let mut written = 0;
        for (k, v) in &memory.markers {
            let key = self.key(k);
            let set: Result<Option<String>, _> = self
                .call(async |c| {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(v)
                        .arg("NX")
                        .query_async(c)
                        .await
                })
                .await;
            written += usize::from(matches!(set, Ok(Some(_))));
        }
        written
    }

    /// Copies every commit marker in Redis into the memory, when they
    /// changed since the last copy.
    async fn mirror(&self) {
        let Some(dir) = self.state_dir() else { return };
        let ns = format!("{}:", self.inner.cfg.namespace);
        let mut markers = std::collections::BTreeMap::new();
        for kind in ["committing", "committed"] {
            let pattern = format!("{ns}{kind}:*");
            let keys: Result<Vec<String>, _> = self
                .call(async |c| {
                    let mut keys = Vec::new();
                    let mut cursor: u64 = 0;
                    loop {
                        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(500)
                            .query_async(c)
                            .await?;
                        keys.extend(batch);
                        if next == 0 {
                            return Ok(keys);
                        }
                        cursor = next;
                    }
                })
                .await;
            let Ok(keys) = keys else { return };
            if keys.is_empty() {
                continue;
            }
            let values: Result<Vec<Option<String>>, _> = self
                .call(async |c| redis::cmd("MGET").arg(&keys).query_async(c).await)
                .await;
            let Ok(values) = values else { return };
            for (k, v) in keys.into_iter().zip(values) {
                if let (Some(rest), Some(v)) = (k.strip_prefix(&ns), v) {
                    markers.insert(rest.to_owned(), v);
                }
            }
        }
        let mut last = lock(&self.inner.mirrored);
        if last.as_ref() == Some(&markers) {
            return;
        }
        let Ok(Some(mut memory)) = self.memory() else {
            return;
        };
        memory.markers = markers.clone();
        memory.seen_at = Some(SystemTime::now());
        match memory.save(&dir) {
            Ok(()) => *last = Some(markers),
            Err(why) => tracing::warn!(error = %why, "cluster: cannot keep a copy of the markers"),
        }
    }

    /// Redis answered with another epoch than ours: its data is gone.
    /// The first time, this instance writes back what its state knows
    /// (best effort: another instance may claim from the emptied store
    /// first, hence the persistence scaling.md asks for).
    async fn lost_store(&self) -> Refusal {
        if self.store_lost() {
            return Refusal::StoreLost;
        }
        self.report_loss("the cluster's Redis lost its data (its epoch changed)")
            .await
    }

    /// Claims `target` (and `account`) for a run of this instance.
    pub async fn claim(
        &self,
        target: &TargetId,
        account: Option<&AccountId>,
    ) -> Result<Claim, Refusal> {
        let epoch = self.epoch().await?;
        if !self
            .inner
            .published
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Before this instance's first claim: a Redis that lost its
            // data while this instance was down would not have them.
            self.republish(&self.known()).await?;
            self.inner
                .published
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let (committing, committed) = self.marker_keys(target);
        let leases = self.lease_keys(target, account);
        let ttl = self.inner.cfg.lease.as_millis() as u64;
        let mut inv = CLAIM.prepare_invoke();
        inv.key(self.key("epoch"))
            .key(self.key("fence"))
            .key(&committing)
            .key(&committed);
        for k in &leases {
            inv.key(k);
        }
        inv.arg(&epoch).arg(&self.inner.cfg.instance).arg(ttl);
        let sent = Instant::now();
        let answer: Vec<String> = self.call(async |c| inv.invoke_async(c).await).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => {
                let token: u64 = answer.get(1).and_then(|t| t.parse().ok()).unwrap_or(0);
                self.inner.health.send_modify(|h| h.leases += 1);
                Ok(Claim {
                    shared: Some(Shared {
                        cluster: self.clone(),
                        target: target.clone(),
                        keys: leases,
                        value: format!("{token}|{}", self.inner.cfg.instance),
                        token,
                        valid_until: Arc::new(Mutex::new(sent + self.inner.cfg.lease)),
                        stop: CancellationToken::new(),
                        released: std::sync::atomic::AtomicBool::new(false),
                    }),
                })
            }
            Some("epoch") => Err(self.lost_store().await),
            Some("committing") => Err(Refusal::Committing {
                holder: holder(answer.get(1)),
            }),
            Some("committed") => {
                let v = answer.get(1).cloned().unwrap_or_default();
                Err(Refusal::Committed {
                    holder: holder(Some(&v)),
                    order: v.splitn(4, '|').nth(3).unwrap_or("").to_owned(),
                })
            }
            Some("held") => Err(Refusal::Held {
                what: if answer.get(1).map(String::as_str) == Some("0") {
                    "target"
                } else {
                    "account"
                },
                holder: answer
                    .get(2)
                    .and_then(|v| v.split_once('|'))
                    .map(|(_, i)| i.to_owned())
                    .unwrap_or_default(),
            }),
            other => Err(Refusal::Unreachable(format!(
                "unexpected answer from the claim script: {other:?}"
            ))),
        }
    }

    /// Writes back markers this instance's state knows of: `committing`
    /// never over another's (`SET NX`); `committed` in place of our own
    /// `committing`. Before this instance's first claim, and after Redis
    /// lost its data.
    pub async fn republish(&self, known: &[KnownMarker]) -> Result<usize, Refusal> {
        let me = &self.inner.cfg.instance;
        let mut written = 0;
        for m in known {
            match m {
                KnownMarker::Committing { target, run } => {
                    let key = self.marker_keys(target).0;
                    let value = format!("{me}|0|{}|", run.map_or(0, |r| r.0));
                    let set: Option<String> = self
                        .call(async |c| {
                            redis::cmd("SET")
                                .arg(&key)
                                .arg(&value)
                                .arg("NX")
                                .query_async(c)
                                .await
                        })
                        .await?;
                    written += usize::from(set.is_some());
                }
                KnownMarker::Committed { target, order } => {
                    // Bought: replaces our own `committing` (left by a
                    // crash before `committed` was written).
                    let value = format!("{me}|0|0|{}", order.as_deref().unwrap_or("-"));
                    self.mark_committed(target, &value).await?;
                    written += 1;
                }
            }
        }
        if written > 0 {
            tracing::info!(
                markers = written,
                "cluster: wrote back the commit markers this instance's state knows"
            );
        }
        Ok(written)
    }

    /// Test mode: this instance's `committed` markers for `targets` go, as
    /// their local state goes back to `ready`.
    pub async fn forget_committed(&self, targets: &[TargetId]) -> Result<(), Refusal> {
        let keys: Vec<String> = targets.iter().map(|t| self.marker_keys(t).1).collect();
        self.forget(keys).await
    }

    /// An operator settled `target` here: our markers follow (a
    /// `completed` one keeps it bought for the cluster; anything else
    /// frees it).
    pub async fn settled(&self, target: &TargetId, completed: bool) -> Result<(), Refusal> {
        let (committing, committed) = self.marker_keys(target);
        if completed {
            self.mark_committed(target, &format!("{}|0|0|-", self.inner.cfg.instance))
                .await
        } else {
            self.forget(vec![committing, committed]).await
        }
    }

    /// Writes `committed` (`value`) for `target` in place of this
    /// instance's own `committing`.
    async fn mark_committed(&self, target: &TargetId, value: &str) -> Result<(), Refusal> {
        let (committing, committed) = self.marker_keys(target);
        let prefix = self.prefix();
        self.call(async |c| {
            COMMITTED
                .key(&committing)
                .key(&committed)
                .arg(&prefix)
                .arg(value)
                .invoke_async::<i64>(c)
                .await
        })
        .await
        .map(drop)
    }

    async fn forget(&self, keys: Vec<String>) -> Result<(), Refusal> {
        if keys.is_empty() {
            return Ok(());
        }
        let prefix = self.prefix();
        self.call(async |c| {
            let mut inv = FORGET.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            inv.arg(&prefix).invoke_async::<i64>(c).await
        })
        .await
        .map(drop)
    }

    /// Keeps presence and retries failed marker writes, every third of a
    /// lease, until [`Cluster::shutdown`]. Call once.
    pub fn start_heartbeat(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let every = me.inner.cfg.lease / 3;
            loop {
                me.beat().await;
                tokio::select! {
                    () = me.inner.shut.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    async fn beat(&self) {
        let Ok(epoch) = self.epoch().await else {
            return;
        };
        let key = self.key("epoch");
        let now: Result<Option<String>, _> = self
            .call(async |c| redis::cmd("GET").arg(&key).query_async(c).await)
            .await;
        match now {
            Ok(Some(e)) if e == epoch => {}
            Ok(_) => {
                self.lost_store().await;
                return;
            }
            Err(_) => return,
        }
        self.mirror().await;
        let members = self.key("instances");
        let me = self.inner.cfg.instance.clone();
        let now = now_ms();
        let stale = now.saturating_sub(3 * self.inner.cfg.lease.as_millis() as u64);
        let peers: Result<Vec<String>, _> = self
            .call(async |c| {
                redis::cmd("ZADD")
                    .arg(&members)
                    .arg(now)
                    .arg(&me)
                    .exec_async(c)
                    .await?;
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&members)
                    .arg(0)
                    .arg(stale)
                    .exec_async(c)
                    .await?;
                redis::cmd("ZRANGE")
                    .arg(&members)
                    .arg(0)
                    .arg(-1)
                    .query_async(c)
                    .await
            })
            .await;
        if let Ok(peers) = peers {
            self.inner.health.send_if_modified(|h| {
                let changed = h.peers != peers;
                h.peers = peers;
                changed
            });
        }
        self.flush_pending().await;
    }

    async fn flush_pending(&self) {
        let pending: Vec<Pending> = std::mem::take(&mut *lock(&self.inner.pending));
        for p in pending {
            if let Err(e) = self.write_pending(&p).await {
                tracing::debug!(error = %e, "cluster marker still not written");
                lock(&self.inner.pending).push(p);
            }
        }
    }

    async fn write_pending(&self, p: &Pending) -> Result<(), Refusal> {
        match p {
            Pending::Committed { target, value } => self.mark_committed(target, value).await,
            Pending::Uncommitting { target } => {
                let (committing, _) = self.marker_keys(target);
                self.forget(vec![committing]).await
            }
        }
    }

    /// Writes `p` now (from a blocking thread), or queues it for the
    /// heartbeat.
    fn write_or_queue(&self, p: Pending) {
        let r = self.inner.runtime.block_on(self.write_pending(&p));
        if let Err(e) = r {
            tracing::warn!(error = %e, "cluster marker not written; retried while baton runs");
            lock(&self.inner.pending).push(p);
        }
    }

    /// Stops the heartbeat and takes this instance out of the peers.
    pub async fn shutdown(&self) {
        self.inner.shut.cancel();
        self.flush_pending().await;
        let members = self.key("instances");
        let me = self.inner.cfg.instance.clone();
        let _ = self
            .call(async |c| {
                redis::cmd("ZREM")
                    .arg(&members)
                    .arg(&me)
                    .exec_async(c)
                    .await
            })
            .await;
    }
}

/// The commit markers a state implies: a target past its commit point,
/// or bought (completed with an order).
pub fn known_markers(doc: &StateDoc) -> Vec<KnownMarker> {
    doc.targets
        .iter()
        .filter_map(|(target, t)| match t.status {
            Status::Committing | Status::Committed | Status::InDoubt => {
                Some(KnownMarker::Committing {
                    target: target.clone(),
                    run: t.run_id,
                })
            }
            Status::Completed if t.last_order.is_some() => Some(KnownMarker::Committed {
                target: target.clone(),
                order: t.last_order.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The instance named in a marker or lease value.
fn holder(v: Option<&String>) -> String {
    v.and_then(|v| v.split('|').next())
        .unwrap_or_default()
        .to_owned()
}

/// A run's leases on its target and account: in Redis with `cluster:`
/// (renewed while the run lives), or nothing to hold for an instance
/// alone, whose registry already keeps its runs apart.
#[derive(Debug)]
pub struct Claim {
    shared: Option<Shared>,
}

impl Claim {
    /// The claim of an instance alone: every check passes, nothing is
    /// written.
    pub fn local() -> Claim {
        Claim { shared: None }
    }

    /// The fencing token: larger than every claim granted before it (0
    /// for a local claim).
    pub fn token(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.token)
    }

    /// Renews the leases every third of a lease while the run lives; when
    /// a renewal finds them gone, or none succeeded for a whole lease,
    /// the run is cancelled (or, past its commit point, held: I9).
    pub fn keep_alive(&self, control: Arc<RunControl>) {
        if let Some(s) = &self.shared {
            s.keep_alive(control);
        }
    }

    /// Immediately before `commit` (from the script's thread): checks that
    /// both leases still carry this claim's token and that the target has
    /// no marker, and writes `committing` in the same step.
    pub fn begin_commit(&self, run: RunId) -> Result<(), Refusal> {
        self.shared.as_ref().map_or(Ok(()), |s| s.begin_commit(run))
    }

    /// The shop answered with an order (from the script's thread).
    pub fn committed(&self, run: RunId, order: Option<&str>) {
        if let Some(s) = &self.shared {
            s.committed(run, order);
        }
    }

    /// The shop refused, or the commit never started: the target is free
    /// for the cluster again.
    pub fn uncommitted(&self) {
        if let Some(s) = &self.shared {
            s.uncommitted();
        }
    }

    /// Gives the leases back (the run ended). Once.
    pub async fn release(&self) {
        if let Some(s) = &self.shared {
            s.release().await;
        }
    }
}

/// A run's leases in Redis, renewed while it lives.
struct Shared {
    cluster: Cluster,
    target: TargetId,
    keys: Vec<String>,
    /// `token|instance`: what the lease keys hold while they are ours.
    value: String,
    token: u64,
    /// Until when the lease is surely ours by the local monotonic clock:
    /// the last successful renewal's *send* time plus the lease.
    valid_until: Arc<Mutex<Instant>>,
    stop: CancellationToken,
    released: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("target", &self.target)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Renews the leases every third of a lease while the run lives; when
    /// a renewal finds them gone, or none succeeded for a whole lease,
    /// the run is cancelled (or, past its commit point, held: I9).
    fn keep_alive(&self, control: Arc<RunControl>) {
        let cluster = self.cluster.clone();
        let keys = self.keys.clone();
        let value = self.value.clone();
        let valid = self.valid_until.clone();
        let stop = self.stop.clone();
        let lease = cluster.inner.cfg.lease;
        let target = self.target.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(lease / 3) => {}
                }
                let sent = Instant::now();
                let ttl = lease.as_millis() as u64;
                let renewed: Result<i64, _> = cluster
                    .call(async |c| {
                        let mut inv = RENEW.prepare_invoke();
                        for k in &keys {
                            inv.key(k);
                        }
                        inv.arg(&value).arg(ttl).invoke_async(c).await
                    })
                    .await;
                let why = match renewed {
                    Ok(1) => {
                        *lock(&valid) = sent + lease;
                        continue;
                    }
                    Ok(_) => "the lease expired or another instance took it".to_owned(),
                    Err(e) => {
                        let until = *lock(&valid);
                        if Instant::now() < until {
                            continue;
                        }
                        format!("no renewal for a whole lease ({e})")
                    }
                };
                if stop.is_cancelled() {
                    return;
                }
                tracing::error!(target = %target, "cluster lease lost: {why}; the run is stopped before its commit");
                control.cancel_or_hold(CancelReason::LeaseLost);
                return;
            }
        });
    }

    /// Immediately before `commit` (from the script's thread): checks that
    /// both leases still carry this claim's token and that the target has
    /// no marker, and writes `committing` in the same step.
    fn begin_commit(&self, run: RunId) -> Result<(), Refusal> {
        let c = &self.cluster;
        c.inner.runtime.block_on(async {
            let epoch = c.epoch().await?;
            let (committing, committed) = c.marker_keys(&self.target);
            let marker = format!("{}|{}|{}|", c.inner.cfg.instance, self.token, run.0);
            let answer: String = c
                .call(async |conn| {
                    let mut inv = COMMIT.prepare_invoke();
                    inv.key(c.key("epoch")).key(&committing).key(&committed);
                    for k in &self.keys {
                        inv.key(k);
                    }
                    inv.arg(&epoch)
                        .arg(&self.value)
                        .arg(&marker)
                        .invoke_async(conn)
                        .await
                })
                .await?;
            match answer.as_str() {
                "ok" => Ok(()),
                "epoch" => Err(c.lost_store().await),
                "lost" => Err(Refusal::Lost),
                a => {
                    let v = a.strip_prefix("marked|").unwrap_or(a).to_owned();
                    Err(Refusal::Committing {
                        holder: holder(Some(&v)),
                    })
                }
            }
        })
    }

    /// The shop answered with an order (from the script's thread).
    fn committed(&self, run: RunId, order: Option<&str>) {
        let c = &self.cluster;
        c.write_or_queue(Pending::Committed {
            target: self.target.clone(),
            value: format!(
                "{}|{}|{}|{}",
                c.inner.cfg.instance,
                self.token,
                run.0,
                order.unwrap_or("-")
            ),
        });
    }

    /// The shop refused, or the commit never started: the target is free
    /// for the cluster again.
    fn uncommitted(&self) {
        self.cluster.write_or_queue(Pending::Uncommitting {
            target: self.target.clone(),
        });
    }

    /// Gives the leases back (the run ended). Once.
    async fn release(&self) {
        if self
            .released
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.stop.cancel();
        release_leases(self.cluster.clone(), self.keys.clone(), self.value.clone()).await;
    }
}

/// Deletes the leases in `keys` that still hold `value`.
async fn release_leases(cluster: Cluster, keys: Vec<String>, value: String) {
    let _ = cluster
        .call(async |c| {
            let mut inv = RELEASE.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            inv.arg(&value).invoke_async::<i64>(c).await
        })
        .await;
    cluster
        .inner
        .health
        .send_modify(|h| h.leases = h.leases.saturating_sub(1));
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self
            .released
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        // A claim dropped without `release` (a dispatch refused after it):
        // give it back in the background; at worst it expires.
        self.stop.cancel();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(release_leases(
                self.cluster.clone(),
                std::mem::take(&mut self.keys),
                std::mem::take(&mut self.value),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://user:hunter2@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
        let cfg = ClusterConfig {
            redis: "redis://:hunter2@db:6379".into(),
            instance: "a".into(),
            lease: LEASE,
            namespace: "baton".into(),
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}

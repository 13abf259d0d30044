//! Steps written in Rust: a [`StepRunner`] whose steps and monitors are
//! async closures.
//!
//! For programs built on the baton library that want a step in Rust rather
//! than Rhai, and for the safety tests, which drive the scheduler with steps
//! that take exact (virtual) time, fail, hang or panic. Like scripts, native
//! steps have versions: replacing a step bumps its generation, and a run
//! keeps the versions it pinned when it started.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::{Flow, PinnedFlow, Step, StepContext, StepEnd, StepError, StepRunner};
use crate::id::PinnedVersion;
use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::BoxFuture;

type StepFn =
    Arc<dyn Fn(StepContext) -> BoxFuture<'static, Result<StepEnd, StepError>> + Send + Sync>;
type MonitorFn =
    Arc<dyn Fn(StepContext) -> BoxFuture<'static, Result<bool, StepError>> + Send + Sync>;

#[derive(Clone)]
struct Versioned<F> {
    generation: u64,
    f: F,
}

#[derive(Clone, Default)]
struct Table {
    steps: HashMap<String, Versioned<StepFn>>,
    monitors: HashMap<String, Versioned<MonitorFn>>,
}

/// Steps and monitors as Rust closures.
#[derive(Default)]
pub struct RustSteps {
    table: ArcSwap<Table>,
    generation: AtomicU64,
}

impl RustSteps {
    pub fn new() -> RustSteps {
        RustSteps::default()
    }

    /// Defines (or replaces, with a new generation) the step `name`.
    pub fn step<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StepEnd, StepError>> + Send + 'static,
    {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let f: StepFn = Arc::new(move |cx| f(cx).boxed());
        self.table.rcu(|t| {
            let mut t = Table::clone(t);
            t.steps.insert(
                name.to_owned(),
                Versioned {
                    generation,
                    f: f.clone(),
                },
            );
            t
        });
    }

    /// Defines (or replaces) the monitor `name`. It gets a step's context
    /// with no page and no commit ([`StepContext::monitor`]).
    pub fn monitor<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool, StepError>> + Send + 'static,
    {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let f: MonitorFn = Arc::new(move |cx| f(cx).boxed());
        self.table.rcu(|t| {
            let mut t = Table::clone(t);
            t.monitors.insert(
                name.to_owned(),
                Versioned {
                    generation,
                    f: f.clone(),
                },
            );
            t
        });
    }

    /// The current generation of `name`.
    pub fn generation(&self, name: &str) -> Option<u64> {
        self.table.load().steps.get(name).map(|v| v.generation)
    }
}

struct Pinned {
    table: Arc<Table>,
    flow: Vec<String>,
}

impl PinnedFlow for Pinned {
    fn versions(&self) -> Vec<PinnedVersion> {
        crate::flow::versions_of(&self.flow, |s| {
            self.table.steps.get(s).map(|v| v.generation)
        })
    }

    fn run_step(
        &self,
        step: &Step,
        cx: StepContext,
    ) -> BoxFuture<'static, Result<StepEnd, StepError>> {
        if let Some(v) = self.table.steps.get(&step.script) {
            (v.f)(cx)
        } else {
            let msg = format!("native step `{}` is not defined", step.script);
            async move { Err(StepError::failed(msg)) }.boxed()
        }
    }
}

impl StepRunner for RustSteps {
    fn pin(&self, flow: &Flow) -> Result<Arc<dyn PinnedFlow>, StepError> {
        let table = self.table.load_full();
        if let Some(missing) = flow
            .steps
            .iter()
            .find(|s| !table.steps.contains_key(&s.script))
        {
            return Err(StepError::failed(format!(
                "native step `{}` is not defined",
                missing.script
            )));
        }
        Ok(Arc::new(Pinned {
            table,
            flow: flow.steps.iter().map(|s| s.script.clone()).collect(),
        }))
    }

    fn monitor(
        &self,
        script: &str,
        cx: StepContext,
    ) -> BoxFuture<'static, Result<bool, StepError>> {
        if let Some(v) = self.table.load().monitors.get(script) {
            (v.f)(cx)
        } else {
            let msg = format!("native monitor `{script}` is not defined");
            async move { Err(StepError::failed(msg)) }.boxed()
        }
    }
}

/// `commit(label, ..)` for native steps: persists `committing` through the
/// run's sink, runs `body`, and records what it returned. Returns `None`
/// when the sink skipped the body (a dry run).
pub async fn commit<F>(cx: &StepContext, label: &str, body: F) -> Result<Option<String>, StepError>
where
    F: Future<Output = Result<String, StepError>>,
{
    let sink = cx.commit()?.clone();
    let l = label.to_owned();
    let go = tokio::task::spawn_blocking(move || sink.begin(&l))
        .await
        .map_err(|e| StepError::failed(e.to_string()))?
        // An `over_budget` refusal is also recorded by the run's sink,
        // which ends the run `over_budget` whatever this step returns.
        .map_err(|e| StepError::failed(e.to_string()))?;
    if !go {
        return Ok(None);
    }
    let result = body.await?;
    // `done` persists `committed`: a blocking write, off the async threads.
    let (sink, l, r) = (cx.commit()?.clone(), label.to_owned(), result.clone());
    tokio::task::spawn_blocking(move || sink.done(&l, Some(&r)))
        .await
        .map_err(|e| StepError::failed(e.to_string()))?;
    Ok(Some(result))
}

//! `switchyard_runtime_tasks{runtime}`: tasks alive on each worker runtime and on the control
//! runtime, read from tokio's runtime metrics at every scrape.
//!
//! Every connection, request stream, tunnel and control job is a task, so under steady load the
//! figure is flat and after load it returns to its idle value; one that only grows is a leak.
//! The hardening tests compare it with its baseline after each fault.
//!
//! The registry is process-wide, like the metrics recorder it feeds: a later proxy in the same
//! process (tests start several) takes over the labels of an earlier one.

use std::sync::Mutex;

use tokio::runtime::Handle;

/// The gauge's name (every metric carries the `switchyard_` prefix; README "Metrics").
pub const RUNTIME_TASKS: &str = "switchyard_runtime_tasks";

/// Runtimes by label (`worker-0`, …, `control`). A `Mutex` is fine: registration happens at
/// start-up and the scrape reads it; the request path never touches it.
static RUNTIMES: Mutex<Vec<(String, Handle)>> = Mutex::new(Vec::new());

/// Registers `handle` under `label`, replacing an earlier runtime with the same label.
pub fn watch(label: String, handle: Handle) {
    let mut runtimes = RUNTIMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    runtimes.retain(|(known, _)| *known != label);
    runtimes.push((label, handle));
}

/// Sets the gauge for every registered runtime; called just before `/metrics` renders.
pub fn record() {
    let runtimes = RUNTIMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (label, handle) in runtimes.iter() {
        let alive = handle.metrics().num_alive_tasks();
        metrics::gauge!(RUNTIME_TASKS, "runtime" => label.clone()).set(alive as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_task_shows_until_it_ends() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let handle = runtime.handle().clone();
        watch("unit-test".to_owned(), handle.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = handle.spawn(async move {
            let _ = rx.await;
        });
        assert_eq!(handle.metrics().num_alive_tasks(), 1);
        let _ = tx.send(());
        runtime.block_on(task).expect("task ends");
        assert_eq!(handle.metrics().num_alive_tasks(), 0);
        let labels: Vec<String> = RUNTIMES
            .lock()
            .expect("registry")
            .iter()
            .map(|(label, _)| label.clone())
            .collect();
        assert_eq!(labels.iter().filter(|l| *l == "unit-test").count(), 1);
    }
}

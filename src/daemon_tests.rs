//! Unit tests of the daemon's supervision: the first task to end ends the daemon, named.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn a_task_that_returns_ends_the_daemon_with_an_error_naming_it() {
    let mut tasks = Tasks::default();
    tasks.spawn_forever("sleeper", tokio::time::sleep(Duration::from_secs(3600)));
    tasks.spawn_forever("quitter", async {});
    let error = tasks.first_end().await;
    assert!(matches!(error, DaemonError::TaskEnded { task: "quitter" }), "{error:?}");
    assert!(error.to_string().contains("quitter"), "{error}");
}

#[tokio::test]
async fn a_task_that_fails_ends_the_daemon_with_its_error() {
    let mut tasks = Tasks::default();
    tasks.spawn_forever("sleeper", tokio::time::sleep(Duration::from_secs(3600)));
    let addr = "127.0.0.1:1".parse().unwrap();
    let failure = HttpError::Bind { addr, source: std::io::Error::other("refused") };
    tasks.spawn("server", async move { Err::<(), _>(failure) });
    let error = tasks.first_end().await;
    assert!(matches!(&error, DaemonError::TaskFailed { task: "server", source } if matches!(**source, DaemonError::Http(_))));
    let chain = crate::logtext::error_line(&error);
    assert!(chain.contains("server") && chain.contains("refused"), "{chain}");
}

#[tokio::test]
async fn a_task_that_panics_ends_the_daemon_named() {
    let mut tasks = Tasks::default();
    tasks.spawn_forever("sleeper", tokio::time::sleep(Duration::from_secs(3600)));
    tasks.spawn_forever("panicker", async { panic!("on purpose") });
    let error = tasks.first_end().await;
    assert!(matches!(error, DaemonError::TaskPanicked { task: "panicker", .. }), "{error:?}");
}

#[tokio::test]
async fn dropping_the_tasks_aborts_the_rest() {
    let mut tasks = Tasks::default();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tasks.spawn_forever("holder", async move {
        let _tx = tx;
        std::future::pending::<()>().await;
    });
    drop(tasks);
    assert!(rx.await.is_err(), "the task was aborted and its sender dropped");
}

//! The stop signal of the commands that run until told to stop (watch, logs, stats --watch,
//! metrics): SIGINT or SIGTERM.

/// Completes on SIGINT or SIGTERM. The handlers are installed when it is first polled (on
/// the watcher's runtime, before anything changes).
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("netshim: warning: cannot handle SIGINT/SIGTERM ({e}); stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

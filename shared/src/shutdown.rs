//! Stopping a process on a signal: the first Ctrl-C or SIGTERM asks it to finish what it
//! does (cancels a token the process watches), a second one exits at once. `lc serve`
//! and `lc-worker` share it.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first Ctrl-C or SIGTERM; on a second, logs `on_second`
/// (what is left undone) and exits with status 130.
pub async fn cancel_on_signal(shutdown: CancellationToken, on_second: &'static str) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                return;
            }
        };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        if round == 0 {
            shutdown.cancel();
        } else {
            tracing::warn!("second signal: exiting now; {on_second}");
            std::process::exit(130);
        }
    }
}

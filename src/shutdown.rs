//! Waiting that gives way to the shutdown signal (SIGINT/SIGTERM, or the end of an idle run).

use std::time::Duration;

use tokio::sync::watch;

/// Sleeps `d` unless shutdown comes first.
pub async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    tokio::select! {
        _ = &mut sleep => {}
        r = shutdown.changed() => if r.is_err() {
            // Nobody can ask for shutdown any more: just sleep.
            sleep.await;
        }
    }
}

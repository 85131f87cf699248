//! systemd's service notifications for `Type=notify` (sd_notify(3), by the
//! `sd-notify` crate): `READY=1` once courtline takes calls, `STOPPING=1` and a
//! `STATUS=` line while it drains, `EXTEND_TIMEOUT_USEC=` so that systemd waits
//! for the drain the configuration asks for rather than `TimeoutStopSec=`, and
//! `WATCHDOG=1` while the SIP endpoint serves (when the unit sets `WatchdogSec=`).
//!
//! Started by anything but systemd (no `NOTIFY_SOCKET`), every call does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

/// Sends `states`; a failure is logged, never fatal: calls matter more than
/// systemd's view of them.
fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// `EXTEND_TIMEOUT_USEC=` for `time`; the protocol's field is 32 bits of
/// microseconds (about 71 minutes), so longer is sent as the longest.
fn extend_by(time: Duration) -> NotifyState<'static> {
    NotifyState::ExtendTimeoutUsec(u32::try_from(time.as_micros()).unwrap_or(u32::MAX))
}

/// Start-up is over: SIP is bound and answered, every prompt loaded, the spool open.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Draining has begun (the first SIGTERM): systemd is to wait up to `for_at_most`
/// instead of killing at its own stop timeout.
pub fn stopping(status: &str, for_at_most: Duration) {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(status),
        extend_by(for_at_most),
    ]);
}

/// What courtline is doing now (`systemctl status` shows it), and how much
/// longer systemd should wait for it to stop.
pub fn stopping_status(status: &str, for_at_most: Duration) {
    send(&[NotifyState::Status(status), extend_by(for_at_most)]);
}

/// The `STATUS=` text while draining: what `systemctl status courtline` shows.
pub fn draining_status(calls: usize, left: Duration) -> String {
    format!(
        "draining: {calls} call(s) in progress, new calls refused (503); the rest are ended in {} s at the latest",
        left.as_secs()
    )
}

/// When the unit sets `WatchdogSec=`: sends `WATCHDOG=1` at half that interval
/// for as long as `serving` (the SIP endpoint runs), so that a switchboard that
/// stopped serving is restarted by systemd. Nothing when there is no watchdog.
pub fn spawn_watchdog(serving: Arc<AtomicBool>) {
    // WATCHDOG_USEC=0 (from the environment) is no watchdog, not a zero interval.
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(timeout / 2);
        loop {
            ticks.tick().await;
            if serving.load(Ordering::Acquire) {
                send(&[NotifyState::Watchdog]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_longer_than_the_field_holds_is_sent_as_the_longest() {
        assert_eq!(
            extend_by(Duration::from_secs(330)).to_string(),
            "EXTEND_TIMEOUT_USEC=330000000"
        );
        assert_eq!(
            extend_by(Duration::from_secs(3 * 3600)).to_string(),
            format!("EXTEND_TIMEOUT_USEC={}", u32::MAX)
        );
    }

    #[test]
    fn the_draining_status_says_how_many_calls_and_how_long() {
        assert_eq!(
            draining_status(3, Duration::from_millis(287_900)),
            "draining: 3 call(s) in progress, new calls refused (503); the rest are ended in 287 s at the latest"
        );
    }
}

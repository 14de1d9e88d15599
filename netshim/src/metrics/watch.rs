//! `netshim stats --watch`: a collection every interval, turned into per-second rates.

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use super::{collect, rates, Collection, Scope};

/// Collects `scope` every `interval` and hands each interval's rates (and what could not be
/// read) to `on_report`, until `stop` completes. The first report comes one interval after
/// the start (the first collection is the baseline). Collections run on tokio's blocking
/// pool, so `stop` is seen at once even while a netns is being read.
pub fn watch<S>(
    scope: Scope,
    interval: Duration,
    stop: S,
    mut on_report: impl FnMut(&rates::RateReport, &[String]),
) -> Result<(), super::MetricsError>
where
    S: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(super::MetricsError::Runtime)?;
    let scope = std::sync::Arc::new(scope);
    let collect_now = |scope: std::sync::Arc<Scope>| async move {
        let taken = tokio::task::spawn_blocking(move || (collect(&scope), Instant::now())).await;
        taken.unwrap_or_else(|e| {
            (
                Collection {
                    samples: Vec::new(),
                    errors: vec![format!("collection failed: {e}")],
                },
                Instant::now(),
            )
        })
    };
    runtime.block_on(async {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let (mut before, mut at) = tokio::select! {
            _ = &mut stop => return,
            c = collect_now(scope.clone()) => c,
        };
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            let (now, now_at) = tokio::select! {
                _ = &mut stop => return,
                c = collect_now(scope.clone()) => c,
            };
            let secs = now_at.duration_since(at).as_secs_f64();
            let report = rates::rates(
                &before.samples,
                &now.samples,
                secs,
                crate::sandbox::rfc3339_utc(SystemTime::now()),
            );
            on_report(&report, &now.errors);
            (before, at) = (now, now_at);
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

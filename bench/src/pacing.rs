//! Load drivers shared by every system the benchmarks measure.
//!
//! **Open loop** ([`open_loop`]): requests on a fixed timetable, for latency. tokio's timer
//! has a 1 ms resolution (a `sleep_until` wakes at the next millisecond tick, and ticks are
//! batched), which would add up to a millisecond of the benchmark's own making to every
//! sample. So a dedicated thread paces: it sleeps until `spin` before each send time, then
//! yields in a loop until the time (yielding, not spinning hot, because the machine has two
//! cores and the server and client need them), and spawns the request on the tokio runtime.
//! Each latency is measured from the request's *scheduled* time, so a late send counts its
//! lateness (coordinated omission corrected). The pacer's own lateness and the dispatch delay
//! (scheduled time to the request's first poll on tokio) are recorded too, so the benchmark's
//! share of a latency is visible rather than assumed.
//!
//! [`Pacer::TokioTimer`] keeps the old pacing (tokio's `sleep_until`) to show, in one run,
//! what it adds.
//!
//! **Closed loop** ([`closed_loop`]): producers that each keep `in_flight` requests
//! outstanding, for throughput.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats::new_histogram;

/// Sleeps, then yields, until `deadline`: sleeps while more than `spin` remains (the kernel's
/// timer slack, 50 µs by default, stays inside the window), then yields the CPU in a loop.
pub fn wait_until(deadline: Instant, spin: Duration) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let remaining = deadline - now;
        if remaining > spin {
            std::thread::sleep(remaining - spin);
        } else {
            std::thread::yield_now();
        }
    }
}

/// How an open-loop phase paces its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacer {
    /// A dedicated thread that sleeps, then yields within `spin` of each send time.
    Thread {
        /// The window before a send time in which the thread yields instead of sleeping.
        spin: Duration,
    },
    /// tokio's `sleep_until` on the runtime (1 ms timer wheel): what the benchmark did
    /// before issue 9, kept to show what that pacing adds.
    TokioTimer,
}

/// What an open-loop phase measured, in microseconds.
#[derive(Debug, Clone)]
pub struct OpenLoopResult {
    /// Scheduled send time to the request's completion (its acknowledgement).
    pub latency: Histogram<u64>,
    /// Scheduled send time to the request's first poll on the runtime: the benchmark's share.
    pub dispatch: Histogram<u64>,
    /// Scheduled send time to the pacer's spawn: the pacer's own precision.
    pub pacer_lateness: Histogram<u64>,
    /// Requests sent.
    pub requests: u64,
    /// From the first scheduled time to the last completion.
    pub elapsed: Duration,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Sends `count` requests, one every `interval`, from a pacing thread; request `i` is the
/// future `make_request(i)`, spawned on the current tokio runtime at its scheduled time.
/// Returns the first request error, after every request finished.
pub async fn open_loop<F, Fut>(
    interval: Duration,
    count: u64,
    pacer: Pacer,
    make_request: F,
) -> Result<OpenLoopResult, String>
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    assert!(count > 0, "an open-loop phase sends at least one request");
    let handle = tokio::runtime::Handle::current();
    let histograms = Arc::new(Mutex::new((new_histogram(), new_histogram())));
    let shared = Arc::clone(&histograms);
    let spawn = move |i: u64, scheduled: Instant| {
        let request = make_request(i);
        let histograms = Arc::clone(&shared);
        handle.spawn(async move {
            let dispatched = scheduled.elapsed();
            let result = request.await;
            let latency = scheduled.elapsed();
            if let Ok(mut histograms) = histograms.lock() {
                let _ = histograms.0.record(micros(latency));
                let _ = histograms.1.record(micros(dispatched));
            }
            result
        })
    };
    // A short lead so the first send does not start late while the pacer starts.
    let start = Instant::now() + Duration::from_millis(20);
    let capacity = usize::try_from(count).unwrap_or(0);
    let (tasks, pacer_lateness) = match pacer {
        Pacer::Thread { spin } => tokio::task::spawn_blocking(move || {
            let mut lateness = new_histogram();
            let mut tasks = Vec::with_capacity(capacity);
            for i in 0..count {
                let scheduled = start + interval.mul_f64(i as f64);
                wait_until(scheduled, spin);
                let _ = lateness.record(micros(scheduled.elapsed()));
                tasks.push(spawn(i, scheduled));
            }
            (tasks, lateness)
        })
        .await
        .map_err(|e| e.to_string())?,
        Pacer::TokioTimer => {
            let mut lateness = new_histogram();
            let mut tasks = Vec::with_capacity(capacity);
            for i in 0..count {
                let scheduled = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let _ = lateness.record(micros(scheduled.elapsed()));
                tasks.push(spawn(i, scheduled));
            }
            (tasks, lateness)
        }
    };
    let mut first_error = None;
    for task in tasks {
        if let Err(error) = task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            first_error.get_or_insert(error);
        }
    }
    let elapsed = start.elapsed();
    if let Some(error) = first_error {
        return Err(error);
    }
    let (latency, dispatch) = histograms.lock().map_err(|e| e.to_string())?.clone();
    Ok(OpenLoopResult {
        latency,
        dispatch,
        pacer_lateness,
        requests: count,
        elapsed,
    })
}

/// `producers` tasks, each sending `requests_per_producer` requests with at most `in_flight`
/// outstanding; request `i` of producer `p` is `make_request(p, i)`. Returns the time from
/// the first request to the last completion.
pub async fn closed_loop<F, Fut>(
    producers: usize,
    in_flight: usize,
    requests_per_producer: u64,
    make_request: F,
) -> Result<Duration, String>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    assert!(
        in_flight > 0,
        "a producer keeps at least one request in flight"
    );
    let make_request = Arc::new(make_request);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(producers);
    for p in 0..producers {
        let make_request = Arc::clone(&make_request);
        tasks.push(tokio::spawn(async move {
            let mut outstanding = tokio::task::JoinSet::new();
            for i in 0..requests_per_producer {
                if outstanding.len() >= in_flight {
                    if let Some(done) = outstanding.join_next().await {
                        done.map_err(|e| e.to_string())??;
                    }
                }
                outstanding.spawn(make_request(p, i));
            }
            while let Some(done) = outstanding.join_next().await {
                done.map_err(|e| e.to_string())??;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_sends_every_request_once() {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        let result = open_loop(
            Duration::from_micros(200),
            50,
            Pacer::Thread {
                spin: Duration::from_micros(100),
            },
            move |_| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
        )
        .await
        .expect("no request fails");
        // Counts only: no assertion on time, which depends on the machine's load.
        assert_eq!(sent.load(Ordering::Relaxed), 50);
        assert_eq!(result.latency.len(), 50);
        assert_eq!(result.dispatch.len(), 50);
        assert_eq!(result.pacer_lateness.len(), 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_reports_a_failed_request() {
        let result = open_loop(
            Duration::from_micros(100),
            5,
            Pacer::TokioTimer,
            |i| async move {
                if i == 3 {
                    Err("request 3 failed".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(result.err().as_deref(), Some("request 3 failed"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_sends_every_request_of_every_producer() {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        closed_loop(3, 2, 10, move |_, _| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await
        .expect("no request fails");
        assert_eq!(sent.load(Ordering::Relaxed), 30);
    }
}

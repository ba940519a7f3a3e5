//! The glommio runtime refuses to be used from a thread other than its executor's: quinn's
//! runtime objects must be `Send`, but the glommio objects behind them must not move.

mod support;

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use quinn::{AsyncUdpSocket, Runtime};
use runnel_net::runtime::WRONG_THREAD;
use runnel_net::{EndpointOptions, GlommioRuntime};

/// A runtime made on an executor thread, handed to the test thread (it is `Send`).
fn runtime_from_an_executor() -> Arc<GlommioRuntime> {
    support::spawn("runtime-maker", || async {
        Arc::new(GlommioRuntime::new())
    })
    .join()
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|message| (*message).to_owned())
            .unwrap_or_default(),
    }
}

/// The runtime's clock, asked for from a plain thread, panics with the documented message.
#[test]
#[should_panic(expected = "glommio QUIC runtime used off its executor thread: Runtime::now")]
fn runtime_refuses_a_foreign_thread() {
    let runtime = runtime_from_an_executor();
    let _ = runtime.now();
}

/// A runtime method named for the report, and a call of it.
type Attempt<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// Every way quinn reaches into the runtime is refused off-thread, with the method named.
#[test]
fn every_runtime_method_is_refused_off_thread() {
    let runtime = runtime_from_an_executor();
    let attempts: [Attempt<'_>; 4] = [
        (
            "Runtime::new_timer",
            Box::new(|| drop(runtime.new_timer(Instant::now()))),
        ),
        (
            "Runtime::spawn",
            Box::new(|| runtime.spawn(Box::pin(async {}))),
        ),
        (
            "Runtime::wrap_udp_socket",
            Box::new(|| {
                let socket = std::net::UdpSocket::bind(support::loopback()).expect("bind");
                drop(runtime.wrap_udp_socket(socket));
            }),
        ),
        (
            "Runtime::now",
            Box::new(|| {
                let _ = runtime.now();
            }),
        ),
    ];
    for (method, attempt) in attempts {
        let outcome = panic::catch_unwind(AssertUnwindSafe(attempt));
        let message = panic_message(outcome.expect_err(method));
        assert!(message.starts_with(WRONG_THREAD), "{method}: {message}");
        assert!(message.contains(method), "{method}: {message}");
    }
    // Counters are plain atomics and readable anywhere; nothing above got through.
    let counters = runtime.counters();
    assert_eq!(counters.timers_created, 0);
    assert_eq!(counters.tasks_spawned, 0);
}

/// A socket made on an executor thread, handed to the test thread.
fn socket_from_an_executor() -> Arc<dyn AsyncUdpSocket> {
    support::spawn("socket-maker", || async {
        let socket = std::net::UdpSocket::bind(support::loopback()).expect("bind");
        GlommioRuntime::new()
            .wrap_udp_socket(socket)
            .expect("socket wraps")
    })
    .join()
}

/// A socket (which quinn requires to be `Send + Sync`) is refused on another thread.
#[test]
#[should_panic(expected = "glommio QUIC runtime used off its executor thread: \
                           AsyncUdpSocket::local_addr")]
fn socket_refuses_a_foreign_thread() {
    let socket = socket_from_an_executor();
    let _ = socket.local_addr();
}

/// Dropping a socket on another thread is refused too: its glommio half can only be released
/// on its own thread (here it already was, when that thread exited).
#[test]
#[should_panic(expected = "glommio QUIC runtime used off its executor thread: drop")]
fn socket_drop_off_thread_is_refused() {
    drop(socket_from_an_executor());
}

/// An endpoint moved off its executor is refused as soon as it touches its socket. The refusal
/// panics inside quinn while it holds the endpoint's lock, which poisons it: the endpoint is
/// unusable from then on (dropping it would panic again inside quinn), as befits a broken
/// invariant, so the test leaks it.
#[test]
fn endpoint_refuses_a_foreign_thread() {
    let endpoint = support::spawn("endpoint-maker", || async {
        runnel_net::endpoint(support::loopback(), None, &EndpointOptions::default())
            .expect("endpoint binds")
    })
    .join();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| endpoint.local_addr()));
    let message = panic_message(outcome.expect_err("local_addr is refused"));
    assert!(
        message.starts_with(&format!("{WRONG_THREAD}: AsyncUdpSocket::local_addr")),
        "{message}"
    );
    std::mem::forget(endpoint);
}

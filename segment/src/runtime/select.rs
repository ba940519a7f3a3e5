//! Waiting for the first of several futures, or for both of two, on the current task and
//! without an extra dependency. A future that loses a race is dropped (cancelled).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Which future finished first.
pub enum First<A, B, C> {
    /// The first one.
    A(A),
    /// The second one.
    B(B),
    /// The third one.
    C(C),
}

/// Runs three futures until one completes; the others are dropped.
pub async fn first_of<A: Future, B: Future, C: Future>(
    a: A,
    b: B,
    c: C,
) -> First<A::Output, B::Output, C::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut c = pin!(c);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(First::A(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(First::B(v));
        }
        if let Poll::Ready(v) = c.as_mut().poll(cx) {
            return Poll::Ready(First::C(v));
        }
        Poll::Pending
    })
    .await
}

/// Runs two futures concurrently on the current task and returns both outputs.
pub async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut a_out = None;
    let mut b_out = None;
    std::future::poll_fn(|cx| {
        if a_out.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                a_out = Some(v);
            }
        }
        if b_out.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                b_out = Some(v);
            }
        }
        match (a_out.take(), b_out.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a_done, b_done) => {
                a_out = a_done;
                b_out = b_done;
                Poll::Pending
            }
        }
    })
    .await
}

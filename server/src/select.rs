//! Waiting for the first of several futures, without an extra dependency.

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

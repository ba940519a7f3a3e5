//! Sending quinn's GSO transmits in batches that one `sendmsg` can carry, on any runtime.
//!
//! quinn-proto fills a [`Transmit`] with up to 10 datagrams of the path MTU (quinn's
//! `MAX_TRANSMIT_SEGMENTS`) for one `sendmsg` with `UDP_SEGMENT` (GSO). Linux builds a single
//! UDP packet of the whole batch before it cuts it into datagrams, so the batch must fit one IP
//! packet: above [`GSO_BATCH_BYTES_MAX`] the kernel refuses it with `EMSGSIZE`, and quinn-udp's
//! `send` drops that error without a word (it expects it only from MTU probes). On a path whose
//! MTU is above ~6.5 KB (loopback, jumbo frames) every full batch vanished: MTU discovery's
//! probes, sent alone, got through; the data sent at the new size did not; quinn's black-hole
//! detection saw a burst of large packets lost and put the MTU back to 1,200 bytes.
//!
//! [`send_in_batches`] cuts a transmit at segment boundaries into batches the kernel accepts,
//! each still one GSO `sendmsg`. The server's glommio socket calls it; [`BatchingRuntime`]
//! wraps another `quinn::Runtime` (the SDK's tokio one) so that its sockets send the same way.
//!
//! Invariant: the batches of a transmit cover its bytes exactly once, in order, and every
//! batch but the last holds a whole number of segments: no datagram is cut, merged or lost.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, UdpPoller};

/// The most UDP payload one `sendmsg` may carry, all GSO segments together: the 65,535 bytes
/// of an IPv4 packet less its 20-byte header and the 8-byte UDP header. IPv6 allows 65,527;
/// the smaller figure holds for both, and for IPv4-mapped addresses on a dual-stack socket.
pub const GSO_BATCH_BYTES_MAX: usize = 65_507;

/// Sends `transmit` through `send`, one call per batch of at most `segments_max` segments and
/// at most [`GSO_BATCH_BYTES_MAX`] bytes; a transmit that fits goes out in one call, as it is.
///
/// The first error ends the send and is returned. When a batch after the first finds the
/// socket full (`WouldBlock`), quinn retries the whole transmit once the socket is writable,
/// so the batches already sent go out twice and the peer discards the duplicates (QUIC drops
/// a packet number it has already received). That is rare (the send buffers hold several
/// MiB) and better than reporting success and losing the rest: a burst of lost MTU-sized
/// packets is exactly what makes quinn's black-hole detection reset the MTU.
pub fn send_in_batches(
    transmit: &Transmit<'_>,
    segments_max: usize,
    mut send: impl FnMut(&Transmit<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let Some(segment_bytes) = transmit.segment_size.filter(|&bytes| bytes > 0) else {
        // One datagram goes out as it is, even above GSO_BATCH_BYTES_MAX (an IPv6 MTU probe
        // may be; over IPv4 the kernel refuses it and discovery counts the probe as lost).
        return send(transmit);
    };
    let segments_per_batch = (GSO_BATCH_BYTES_MAX / segment_bytes).clamp(1, segments_max.max(1));
    let batch_bytes_max = segments_per_batch * segment_bytes;
    if transmit.contents.len() <= batch_bytes_max {
        return send(transmit);
    }
    let mut sent_bytes = 0;
    for contents in transmit.contents.chunks(batch_bytes_max) {
        // chunks() cuts at multiples of batch_bytes_max, itself a multiple of the segment
        // size, so only the transmit's last segment (quinn's short tail) can be short.
        assert!(
            contents.len() == batch_bytes_max
                || sent_bytes + contents.len() == transmit.contents.len(),
            "a GSO batch other than the last is short: {} of {batch_bytes_max} bytes",
            contents.len(),
        );
        send(&Transmit {
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents,
            // quinn-udp sends a batch of one segment without GSO.
            segment_size: Some(segment_bytes),
            src_ip: transmit.src_ip,
        })?;
        sent_bytes += contents.len();
    }
    assert_eq!(sent_bytes, transmit.contents.len());
    Ok(())
}

/// Another runtime whose UDP sockets send through [`send_in_batches`]; everything else
/// (timers, tasks, the clock) is the wrapped runtime's.
#[derive(Debug)]
pub struct BatchingRuntime {
    inner: Arc<dyn Runtime>,
}

impl BatchingRuntime {
    /// Wraps `inner` (e.g. `quinn::default_runtime()` inside tokio).
    pub fn new(inner: Arc<dyn Runtime>) -> BatchingRuntime {
        BatchingRuntime { inner }
    }
}

impl Runtime for BatchingRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        self.inner.new_timer(deadline)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.inner.spawn(future);
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = self.inner.wrap_udp_socket(socket)?;
        Ok(Arc::new(BatchingUdpSocket::new(inner)))
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }
}

/// Another runtime's UDP socket whose `try_send` goes through [`send_in_batches`].
pub struct BatchingUdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl BatchingUdpSocket {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> BatchingUdpSocket {
        BatchingUdpSocket { inner }
    }
}

impl AsyncUdpSocket for BatchingUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        send_in_batches(transmit, self.inner.max_transmit_segments(), |batch| {
            self.inner.try_send(batch)
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

impl fmt::Debug for BatchingUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchingUdpSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use super::*;

    fn destination() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 4433))
    }

    /// Numbered segments: segment `i` is `len` bytes of `i`, so a cut or merged datagram shows.
    fn segments(lens: &[usize]) -> Vec<u8> {
        lens.iter()
            .enumerate()
            .flat_map(|(index, &len)| std::iter::repeat_n(index as u8, len))
            .collect()
    }

    /// Runs `send_in_batches` and returns each batch's contents and segment size.
    fn batches_of(
        contents: &[u8],
        segment_size: Option<usize>,
        segments_max: usize,
    ) -> Vec<(Vec<u8>, Option<usize>)> {
        let transmit = Transmit {
            destination: destination(),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        let batches = RefCell::new(Vec::new());
        send_in_batches(&transmit, segments_max, |batch| {
            assert_eq!(batch.destination, transmit.destination);
            batches
                .borrow_mut()
                .push((batch.contents.to_vec(), batch.segment_size));
            Ok(())
        })
        .expect("the recording send never fails");
        batches.into_inner()
    }

    /// The bug: 10 segments of 9,000 bytes (90,000, which the kernel refuses) go out as a
    /// batch of 7 (63,000 bytes) and one of 3, cut between segments, the short tail last.
    #[test]
    fn jumbo_segments_are_split_at_segment_boundaries() {
        let mut lens = vec![9_000; 9];
        lens.push(4_321);
        let contents = segments(&lens);
        let batches = batches_of(&contents, Some(9_000), 10);
        let [(first, first_size), (second, second_size)] = batches.as_slice() else {
            panic!("two batches expected, got {}", batches.len());
        };
        assert_eq!((first.len(), *first_size), (7 * 9_000, Some(9_000)));
        assert_eq!(
            (second.len(), *second_size),
            (2 * 9_000 + 4_321, Some(9_000))
        );
        assert_eq!([first.as_slice(), second.as_slice()].concat(), contents);
    }

    /// Segments above half the limit go one per `sendmsg`.
    #[test]
    fn segments_above_half_the_limit_go_alone() {
        let contents = segments(&[40_000, 40_000, 12]);
        let batches = batches_of(&contents, Some(40_000), 10);
        let lens: Vec<usize> = batches.iter().map(|(bytes, _)| bytes.len()).collect();
        assert_eq!(lens, [40_000, 40_000, 12]);
    }

    /// What fits is passed on untouched: ordinary 1,452-byte batches, single datagrams (even
    /// one above the limit), and a transmit of exactly the limit.
    #[test]
    fn transmits_that_fit_are_passed_on_whole() {
        let ethernet = segments(&[1_452; 10]);
        assert_eq!(
            batches_of(&ethernet, Some(1_452), 10),
            [(ethernet.clone(), Some(1_452))]
        );
        let probe = vec![7_u8; 65_527];
        assert_eq!(batches_of(&probe, None, 10), [(probe.clone(), None)]);
        let exact = segments(&[GSO_BATCH_BYTES_MAX / 7; 7]);
        assert!(exact.len() <= GSO_BATCH_BYTES_MAX);
        assert_eq!(
            batches_of(&exact, Some(GSO_BATCH_BYTES_MAX / 7), 10).len(),
            1
        );
    }

    /// A socket that lost GSO (quinn-udp halts it after an `EIO` or `EINVAL`) may still be
    /// handed batches built before: they go out one segment per call.
    #[test]
    fn segments_max_caps_a_batch() {
        let contents = segments(&[1_200, 1_200, 1_200]);
        let lens: Vec<usize> = batches_of(&contents, Some(1_200), 1)
            .iter()
            .map(|(bytes, _)| bytes.len())
            .collect();
        assert_eq!(lens, [1_200, 1_200, 1_200]);
    }

    /// Every split, for a spread of segment sizes and counts, covers the transmit exactly and
    /// keeps every batch within both limits.
    #[test]
    fn batches_cover_the_transmit_within_limits() {
        for segment_bytes in [1_200, 1_452, 6_550, 6_551, 9_000, 21_836, 32_753, 65_000] {
            for count in 1..=10 {
                for tail in [0, 1, segment_bytes / 2] {
                    let mut lens = vec![segment_bytes; count];
                    if tail > 0 {
                        lens.push(tail);
                    }
                    let contents = segments(&lens);
                    let batches = batches_of(&contents, Some(segment_bytes), 10);
                    let rejoined: Vec<u8> = batches
                        .iter()
                        .flat_map(|(bytes, _)| bytes.clone())
                        .collect();
                    assert_eq!(rejoined, contents, "segment {segment_bytes} × {count}");
                    for (bytes, _) in &batches {
                        assert!(bytes.len() <= GSO_BATCH_BYTES_MAX || bytes.len() <= segment_bytes);
                        assert!(bytes.len().div_ceil(segment_bytes) <= 10);
                    }
                }
            }
        }
    }

    /// The first error ends the send: a full socket on the second batch is reported as
    /// `WouldBlock` (quinn then retries the whole transmit), and no later batch is tried.
    #[test]
    fn an_error_stops_the_batches_and_is_returned() {
        let contents = segments(&[30_000; 4]);
        let transmit = Transmit {
            destination: destination(),
            ecn: None,
            contents: &contents,
            segment_size: Some(30_000),
            src_ip: None,
        };
        let calls = Mutex::new(0);
        let result = send_in_batches(&transmit, 10, |_| {
            let mut calls = calls.lock().expect("not poisoned");
            *calls += 1;
            match *calls {
                1 => Ok(()),
                _ => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        assert_eq!(
            result.map_err(|error| error.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        assert_eq!(*calls.lock().expect("not poisoned"), 2);
    }
}

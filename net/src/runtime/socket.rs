//! quinn's UDP socket on a glommio executor: quinn-udp syscalls (GSO, GRO, ECN, packet info)
//! on a non-blocking socket, with readiness taken from glommio's io_uring. A GSO transmit too
//! large for one `sendmsg` (large MTUs) goes out in several (`crate::gso`).
//!
//! glommio 0.9 has no public "wait until this fd is readable/writable" (its `poll_read_ready`
//! is crate-private). So:
//!
//! - **Readable**: a duplicate of the socket's fd is handed to a `glommio::net::UdpSocket`,
//!   and waiting for readability is a one-byte `peek_from` on it: `MSG_PEEK` through io_uring
//!   completes when a datagram is queued and consumes nothing. The datagrams themselves are
//!   then read with quinn-udp (`recvmsg` with GRO and ECN) on the original fd. The peek is
//!   issued only after a read found the socket empty, so a busy socket costs no extra syscall.
//! - **Writable**: io_uring offers no send that sends nothing, and the probe socket cannot poll
//!   for `POLLOUT` through glommio's public API. A UDP socket only refuses a send when its
//!   send buffer is full (raised to several MiB by [`crate::endpoint()`]), so after a
//!   `WouldBlock` a poller waits on a short glommio timer, backing off from
//!   [`WRITABLE_RETRY_US_MIN`] to [`WRITABLE_RETRY_US_MAX`], then lets quinn retry.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use glommio::timer::Timer;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};

use super::confined::{Confined, Owner};
use super::RuntimeStats;
use crate::gso::send_in_batches;

/// First wait before retrying a send that found the socket's send buffer full.
pub const WRITABLE_RETRY_US_MIN: u64 = 50;
/// Longest wait between send retries while the send buffer stays full.
pub const WRITABLE_RETRY_US_MAX: u64 = 2_000;

/// A pending readability probe: resolves when a datagram (or a socket error) is queued.
type ReadableWait = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// The executor-bound half of a socket: glommio's view of the same fd, and the probe in flight.
struct Readable {
    probe: Rc<glommio::net::UdpSocket>,
    wait: Option<ReadableWait>,
}

/// quinn's socket: the `Send + Sync` half (fd, quinn-udp state) plus a confined [`Readable`].
pub(crate) struct GlommioUdpSocket {
    owner: Owner,
    io: std::net::UdpSocket,
    state: UdpSocketState,
    readable: Confined<Readable>,
    /// Set when a send found the send buffer full; cleared when a poller's retry timer fires.
    write_blocked: AtomicBool,
    stats: Arc<RuntimeStats>,
}

impl GlommioUdpSocket {
    /// Wraps `socket` for quinn; must be called on `owner`'s executor thread.
    pub(crate) fn new(
        owner: Owner,
        socket: std::net::UdpSocket,
        stats: Arc<RuntimeStats>,
    ) -> io::Result<GlommioUdpSocket> {
        owner.check("Runtime::wrap_udp_socket");
        // Makes the socket non-blocking and turns on GRO, ECN and packet-info reception.
        let state = UdpSocketState::new((&socket).into())?;
        // The duplicate shares the open file description (queue, O_NONBLOCK, options); glommio
        // only ever peeks through it.
        let probe = glommio::net::UdpSocket::from(socket2::Socket::from(socket.try_clone()?));
        let readable = Readable {
            probe: Rc::new(probe),
            wait: None,
        };
        Ok(GlommioUdpSocket {
            owner,
            io: socket,
            state,
            readable: Confined::new(owner, "Runtime::wrap_udp_socket", readable),
            write_blocked: AtomicBool::new(false),
            stats,
        })
    }

    fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.state.recv((&self.io).into(), bufs, meta)
    }
}

/// Resolves once a datagram is queued on `probe`'s socket, without consuming it.
async fn wait_readable(probe: Rc<glommio::net::UdpSocket>) -> io::Result<()> {
    // A one-byte MSG_PEEK truncates the copy but leaves the datagram queued.
    let mut first_byte = [0_u8; 1];
    probe
        .peek_from(&mut first_byte)
        .await
        .map(|_| ())
        .map_err(io::Error::from)
}

impl quinn::AsyncUdpSocket for GlommioUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.owner.check("AsyncUdpSocket::create_io_poller");
        Box::pin(GlommioUdpPoller {
            socket: self,
            retry: None,
            retry_us: WRITABLE_RETRY_US_MIN,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.owner.check("AsyncUdpSocket::try_send");
        // `send` reports only `WouldBlock`; other send errors are logged by quinn-udp and
        // dropped, as a lost datagram is something QUIC recovers from anyway. `EMSGSIZE` is
        // dropped without even a log line, so a GSO batch the kernel refuses as too large
        // (above 64 KiB: quinn builds those once the MTU passes ~6.5 KB) would vanish whole;
        // `send_in_batches` cuts it into batches that fit.
        let mut batches = 0_u64;
        let result = send_in_batches(transmit, self.state.max_gso_segments(), |batch| {
            batches += 1;
            self.state.send((&self.io).into(), batch)
        });
        if batches > 1 {
            self.stats.count_send_split();
        }
        if let Err(error) = &result {
            if error.kind() == io::ErrorKind::WouldBlock {
                self.write_blocked.store(true, Ordering::Relaxed);
                self.stats.count_send_would_block();
            }
        }
        result
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.readable
            .with("AsyncUdpSocket::poll_recv", |readable| loop {
                // A probe in flight holds this task's waker; until it fires the socket is
                // known to be empty, so there is nothing to read.
                let mut probe_error = None;
                if let Some(wait) = readable.wait.as_mut() {
                    match wait.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(outcome) => {
                            readable.wait = None;
                            probe_error = outcome.err();
                        }
                    }
                }
                match self.recv(bufs, meta) {
                    Ok(count) => {
                        let datagrams = meta
                            .iter()
                            .take(count)
                            .map(|meta| meta.len.div_ceil(meta.stride.max(1)) as u64)
                            .sum();
                        self.stats.count_recv(datagrams);
                        return Poll::Ready(Ok(count));
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        // A probe that failed while the socket is still empty would fail
                        // again: report it rather than spin.
                        if let Some(error) = probe_error {
                            return Poll::Ready(Err(error));
                        }
                        self.stats.count_recv_wait();
                        // Polled on the next turn of the loop, which registers the waker (or
                        // finds a datagram that arrived in between).
                        readable.wait = Some(Box::pin(wait_readable(Rc::clone(&readable.probe))));
                    }
                    Err(error) => return Poll::Ready(Err(error)),
                }
            })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.owner.check("AsyncUdpSocket::local_addr");
        self.io.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.owner.check("AsyncUdpSocket::max_transmit_segments");
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.owner.check("AsyncUdpSocket::max_receive_segments");
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.owner.check("AsyncUdpSocket::may_fragment");
        self.state.may_fragment()
    }
}

impl fmt::Debug for GlommioUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioUdpSocket")
            .field("owner", &self.owner)
            .field("local_addr", &self.io.local_addr().ok())
            .field("write_blocked", &self.write_blocked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One task's wait for the socket to accept sends again (quinn makes one per connection).
struct GlommioUdpPoller {
    socket: Arc<GlommioUdpSocket>,
    /// The retry timer while the socket is blocked.
    retry: Option<Confined<Timer>>,
    /// The next retry delay; doubles while sends keep failing, resets once one goes through.
    retry_us: u64,
}

impl quinn::UdpPoller for GlommioUdpPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let owner = this.socket.owner;
        owner.check("UdpPoller::poll_writable");
        // quinn asks before every send: unless a send just failed, the socket is writable.
        if !this.socket.write_blocked.load(Ordering::Relaxed) {
            this.retry = None;
            this.retry_us = WRITABLE_RETRY_US_MIN;
            return Poll::Ready(Ok(()));
        }
        let retry_us = this.retry_us;
        let retry = this.retry.get_or_insert_with(|| {
            let timer = Timer::new(Duration::from_micros(retry_us));
            Confined::new(owner, "UdpPoller::poll_writable", timer)
        });
        let fired = retry.with("UdpPoller::poll_writable", |timer| {
            Pin::new(timer).poll(cx).is_ready()
        });
        if !fired {
            return Poll::Pending;
        }
        this.retry = None;
        this.retry_us = (retry_us * 2).min(WRITABLE_RETRY_US_MAX);
        this.socket.write_blocked.store(false, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl fmt::Debug for GlommioUdpPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioUdpPoller")
            .field("retry_us", &self.retry_us)
            .field("waiting", &self.retry.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::net::{Ipv4Addr, SocketAddr};

    use glommio::{LocalExecutorBuilder, Placement};
    use quinn::{AsyncUdpSocket, UdpPoller};

    use super::*;

    /// Runs `make()`'s future on a small executor (tests share an 8 MiB memlock limit).
    fn on_executor<T, Fut>(make: impl FnOnce() -> Fut + Send + 'static) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(make)
            .expect("executor starts")
            .join()
            .expect("executor finishes")
    }

    fn loopback_socket() -> io::Result<Arc<GlommioUdpSocket>> {
        let socket = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let stats = Arc::new(RuntimeStats::default());
        Ok(Arc::new(GlommioUdpSocket::new(
            Owner::current(),
            socket,
            stats,
        )?))
    }

    /// Polls one receive into `buf`, returning the datagram's length.
    fn poll_one(
        socket: &GlommioUdpSocket,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut meta = [RecvMeta::default()];
        let mut bufs = [IoSliceMut::new(buf)];
        socket
            .poll_recv(cx, &mut bufs, &mut meta)
            .map_ok(|_| meta[0].len)
    }

    /// An empty socket arms a readability probe and parks; datagrams sent later wake the task
    /// and arrive whole and in order: the probe's peek consumed none of them.
    #[test]
    fn receive_waits_for_datagrams_without_consuming_them() {
        let received = on_executor(|| async {
            let socket = loopback_socket()?;
            let addr = socket.local_addr()?;
            let mut buf = vec![0_u8; 2048];
            let first = poll_fn(|cx| Poll::Ready(poll_one(&socket, cx, &mut buf).is_pending()));
            assert!(first.await, "an empty socket parks the receiver");

            let sender = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(5)).await;
                for message in [&b"first"[..], b"second"] {
                    sender.send_to(message, addr).expect("loopback send");
                }
            })
            .detach();

            let mut received = Vec::new();
            while received.len() < 2 {
                let len = poll_fn(|cx| poll_one(&socket, cx, &mut buf)).await?;
                received.push(buf.get(..len).unwrap_or_default().to_vec());
            }
            assert!(socket.stats.snapshot().recv_waits >= 1);
            Ok::<_, io::Error>(received)
        })
        .expect("loopback I/O");
        assert_eq!(received, vec![b"first".to_vec(), b"second".to_vec()]);
    }

    /// A guard against hangs, not a performance bound: loopback delivers in microseconds.
    const RECEIVE_DEADLINE: Duration = Duration::from_secs(10);

    /// Receives until `count` datagrams have arrived, cutting GRO batches at their stride
    /// as quinn does; fails with `TimedOut` if they have not after [`RECEIVE_DEADLINE`].
    async fn receive_datagrams(
        socket: &GlommioUdpSocket,
        count: usize,
    ) -> io::Result<Vec<Vec<u8>>> {
        let receive = async {
            receive_datagrams_unbounded(socket, count)
                .await
                .map_err(Into::into)
        };
        Ok(glommio::timer::timeout(RECEIVE_DEADLINE, receive).await?)
    }

    async fn receive_datagrams_unbounded(
        socket: &GlommioUdpSocket,
        count: usize,
    ) -> io::Result<Vec<Vec<u8>>> {
        // quinn's receive buffers: the largest payload times the GRO segments, per message.
        let mut storage = vec![0_u8; 4 * 65_536 * socket.max_receive_segments()];
        let mut datagrams = Vec::new();
        while datagrams.len() < count {
            let mut metas = [RecvMeta::default(); 4];
            let received = {
                let mut bufs: Vec<IoSliceMut<'_>> = storage
                    .chunks_mut(65_536 * socket.max_receive_segments())
                    .map(IoSliceMut::new)
                    .collect();
                poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut metas)).await?
            };
            let messages = storage
                .chunks(65_536 * socket.max_receive_segments())
                .zip(&metas)
                .take(received);
            for (buf, meta) in messages {
                let bytes = buf.get(..meta.len).unwrap_or_default();
                datagrams.extend(bytes.chunks(meta.stride.max(1)).map(<[u8]>::to_vec));
            }
        }
        Ok(datagrams)
    }

    /// Regression test for issue 9 (the MTU fell back to 1,200 bytes on loopback): a GSO
    /// transmit of 10 segments of 9,000 bytes is 90,000 bytes, more than one `sendmsg` may
    /// carry; the kernel refused it with `EMSGSIZE`, quinn-udp dropped that silently, and not
    /// one datagram arrived. Now it goes out in two batches and all ten arrive whole and in
    /// order, through GRO and the stride handling of the receive path.
    #[test]
    fn jumbo_gso_transmit_arrives_whole() {
        let (datagrams, expected, counters) = on_executor(|| async {
            let sender = loopback_socket()?;
            let receiver = loopback_socket()?;
            let segment_bytes = 9_000;
            let expected: Vec<Vec<u8>> =
                (0..10_u8).map(|index| vec![index; segment_bytes]).collect();
            let contents = expected.concat();
            let transmit = Transmit {
                destination: receiver.local_addr()?,
                ecn: None,
                contents: &contents,
                segment_size: Some(segment_bytes),
                src_ip: None,
            };
            sender.try_send(&transmit)?;
            let datagrams = receive_datagrams(&receiver, expected.len()).await?;
            Ok::<_, io::Error>((datagrams, expected, sender.stats.snapshot()))
        })
        .expect("loopback I/O");
        assert_eq!(datagrams.len(), expected.len());
        assert!(datagrams == expected, "datagrams cut, merged or reordered");
        assert_eq!(counters.send_splits, 1);
    }

    /// A single datagram of nearly 64 KiB (the largest MTU discovery can settle on over IPv4
    /// loopback) goes out and comes back through the runtime socket intact.
    #[test]
    fn largest_datagram_arrives_whole() {
        let (datagrams, expected) = on_executor(|| async {
            let sender = loopback_socket()?;
            let receiver = loopback_socket()?;
            let expected: Vec<u8> = (0..crate::gso::GSO_BATCH_BYTES_MAX)
                .map(|index| (index % 251) as u8)
                .collect();
            let transmit = Transmit {
                destination: receiver.local_addr()?,
                ecn: None,
                contents: &expected,
                segment_size: None,
                src_ip: None,
            };
            sender.try_send(&transmit)?;
            let datagrams = receive_datagrams(&receiver, 1).await?;
            Ok::<_, io::Error>((datagrams, expected))
        })
        .expect("loopback I/O");
        assert!(datagrams == [expected], "the datagram was cut or changed");
    }

    /// After a send found the buffer full, pollers wait on a timer whose delay doubles while
    /// sends keep failing and resets once one succeeds.
    #[test]
    fn blocked_sends_are_retried_with_backoff() {
        on_executor(|| async {
            let socket = loopback_socket().expect("socket");
            let mut poller = GlommioUdpPoller {
                socket: Arc::clone(&socket),
                retry: None,
                retry_us: WRITABLE_RETRY_US_MIN,
            };
            let ready_now =
                poll_fn(|cx| Poll::Ready(Pin::new(&mut poller).poll_writable(cx).is_ready()));
            assert!(ready_now.await, "an unblocked socket is writable");

            let mut expected_us = WRITABLE_RETRY_US_MIN;
            for _ in 0..8 {
                // What try_send does on WouldBlock.
                socket.write_blocked.store(true, Ordering::Relaxed);
                let parked =
                    poll_fn(|cx| Poll::Ready(Pin::new(&mut poller).poll_writable(cx).is_pending()));
                assert!(parked.await, "a blocked socket parks the poller");
                poll_fn(|cx| Pin::new(&mut poller).poll_writable(cx))
                    .await
                    .expect("writable after the retry delay");
                expected_us = (expected_us * 2).min(WRITABLE_RETRY_US_MAX);
                assert_eq!(poller.retry_us, expected_us);
            }
            assert_eq!(expected_us, WRITABLE_RETRY_US_MAX);
            // A send went through: the next wait starts short again.
            let ready_now =
                poll_fn(|cx| Poll::Ready(Pin::new(&mut poller).poll_writable(cx).is_ready()));
            assert!(ready_now.await);
            assert_eq!(poller.retry_us, WRITABLE_RETRY_US_MIN);
        });
    }
}

//! Raw Ethernet frames in and out of a namespace's interface (AF_PACKET), for devices that
//! send exactly the frames a test built and sniffers that see exactly what arrived.
use std::{
    collections::BTreeSet,
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::packets::{self, Endpoints};

/// An AF_PACKET socket bound to one interface of one namespace.
pub struct RawSocket {
    fd: OwnedFd,
    if_index: i32,
}

const ETH_P_ALL: u16 = 0x0003;
/// Frames per `sendmmsg` call in `RawSocket::send_repeated`.
const SEND_BATCH: usize = 64;

impl RawSocket {
    /// Opens the socket from inside `ns` (a socket keeps the namespace it was made in).
    pub fn open(ns: &str, interface: &str) -> RawSocket {
        crate::lab::in_namespace(ns, || {
            let name = CString::new(interface).expect("interface name");
            // SAFETY: plain libc calls with valid arguments; the fd is owned right away.
            unsafe {
                let if_index = libc::if_nametoindex(name.as_ptr()) as i32;
                assert!(if_index > 0, "no interface {interface} in {ns}");
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ALL.to_be()));
                assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
                let fd = OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = ETH_P_ALL.to_be();
                addr.sll_ifindex = if_index;
                let rc = libc::bind(
                    fd.as_raw_fd(),
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert!(rc == 0, "bind: {}", std::io::Error::last_os_error());
                RawSocket { fd, if_index }
            }
        })
    }

    /// Sends one frame as is.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: sends `frame.len()` bytes from a valid slice on an owned socket.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(sent, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
    }

    /// Sends `frame` `count` times, in batches of `SEND_BATCH` per system call (`sendmmsg`),
    /// stopping early at `deadline`: a flood whose sender costs as little per frame as a
    /// socket allows. Returns the frames sent.
    pub fn send_repeated(&self, frame: &[u8], count: usize, deadline: Instant) -> usize {
        let mut iov = libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() };
        // SAFETY: a zeroed mmsghdr is valid (no name, no control data); each points at `iov`.
        let mut batch: Vec<libc::mmsghdr> = (0..SEND_BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for message in &mut batch {
            message.msg_hdr.msg_iov = &raw mut iov;
            message.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < count && Instant::now() < deadline {
            let now = (count - sent).min(SEND_BATCH) as u32;
            // SAFETY: `batch` holds `now` valid headers pointing at `frame`, which outlives the call.
            let done = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), batch.as_mut_ptr(), now, 0) };
            assert!(done > 0, "sendmmsg: {}", std::io::Error::last_os_error());
            sent += done as usize;
        }
        sent
    }

    /// Collects frames received (not sent by us) until `window` has passed with `filter`
    /// matching; bounded in time.
    pub fn collect(&self, window: Duration, filter: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return frames;
            }
            let tv = libc::timeval { tv_sec: left.as_secs() as i64, tv_usec: i64::from(left.subsec_micros().max(1)) };
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: valid buffers and lengths on an owned socket.
            let n = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                continue;
            }
            // Frames we sent ourselves come back as PACKET_OUTGOING: not arrivals.
            if from.sll_pkttype == libc::PACKET_OUTGOING || from.sll_ifindex != self.if_index {
                continue;
            }
            let frame = &buf[..n as usize];
            if filter(frame) {
                frames.push(frame.to_vec());
            }
        }
    }
}

/// Sends a TCP SYN to port `port` of each of `targets` from `device` through `tx` (source
/// ports from `base`) and returns the targets whose SYN came out on `far_side`.
pub fn reachable(
    far_side: &RawSocket,
    tx: &RawSocket,
    device: Endpoints,
    targets: &[[u8; 4]],
    port: u16,
    base: u16,
) -> BTreeSet<[u8; 4]> {
    std::thread::scope(|scope| {
        let sniffer = scope.spawn(|| {
            far_side
                .collect(Duration::from_millis(600), |f| packets::tcp(f).is_some_and(|t| t.destination_port() == port))
        });
        std::thread::sleep(Duration::from_millis(100));
        for (n, target) in targets.iter().enumerate() {
            tx.send(&packets::tcp_syn(Endpoints { dst_ip: *target, ..device }, base + n as u16, port));
        }
        let frames = sniffer.join().expect("sniffer");
        frames.iter().filter_map(|f| packets::ipv4_destination(f)).filter(|dst| targets.contains(dst)).collect()
    })
}

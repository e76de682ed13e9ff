//! The crate's only unsafe code, kept to two system interfaces the standard library lacks:
//! batched UDP receive and send (`recvmmsg(2)`, `sendmmsg(2)`: one system call for up to a
//! batch of queries, and one for their replies) and `malloc_trim(3)` (glibc keeps freed heap
//! mapped; after a zone rebuild frees megabytes of parse garbage it should go back).
//! Left out: `io_uring`, GSO/GRO for UDP (replies go to many different clients).

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Receive buffers, peer addresses and message headers for one batch of datagrams.
pub struct UdpBatch {
    buffers: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    peers: Vec<libc::sockaddr_storage>,
    peer_lens: Vec<libc::socklen_t>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers inside `iovecs` and `headers` are rebuilt before every system call
// from buffers the batch owns; between calls they are never dereferenced, so moving the batch
// to another thread is sound.
unsafe impl Send for UdpBatch {}

fn empty_header() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is a plain C struct for which all-zero bytes is a valid value (null
    // pointers and zero lengths).
    unsafe { zeroed() }
}

fn empty_storage() -> libc::sockaddr_storage {
    // SAFETY: as above, all-zero bytes are a valid `sockaddr_storage` (family AF_UNSPEC).
    unsafe { zeroed() }
}

impl UdpBatch {
    /// Room for `batch` datagrams of up to `size` bytes each (longer ones are truncated and
    /// reported as such).
    pub fn new(batch: usize, size: usize) -> UdpBatch {
        let batch = batch.max(1);
        UdpBatch {
            buffers: (0..batch).map(|_| vec![0u8; size].into_boxed_slice()).collect(),
            lens: vec![0; batch],
            truncated: vec![false; batch],
            peers: (0..batch).map(|_| empty_storage()).collect(),
            peer_lens: vec![0; batch],
            iovecs: (0..batch)
                .map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 })
                .collect(),
            headers: (0..batch).map(|_| empty_header()).collect(),
            received: 0,
        }
    }

    /// Waits for at least one datagram (up to the socket's receive timeout), then takes every
    /// datagram already queued, up to the batch size. Returns how many were received.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let batch = self.buffers.len();
        for idx in 0..batch {
            self.iovecs[idx] = libc::iovec {
                iov_base: self.buffers[idx].as_mut_ptr().cast(),
                iov_len: self.buffers[idx].len(),
            };
            let header = &mut self.headers[idx];
            *header = empty_header();
            header.msg_hdr.msg_name = (&raw mut self.peers[idx]).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &raw mut self.iovecs[idx];
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live iovec, buffer and address of `self`, with
        // their true sizes; the kernel writes at most that much and `batch` headers exist.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            self.received = 0;
            return Err(io::Error::last_os_error());
        }
        self.received = usize::try_from(received).unwrap_or(0).min(batch);
        for idx in 0..self.received {
            let header = &self.headers[idx];
            self.lens[idx] = (header.msg_len as usize).min(self.buffers[idx].len());
            self.truncated[idx] = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.peer_lens[idx] = header.msg_hdr.msg_namelen;
        }
        Ok(self.received)
    }

    /// Datagram `idx` of the last receive: its bytes, whether it was cut to the buffer size,
    /// and its sender (`None` for an address family other than IPv4 and IPv6).
    pub fn packet(&self, idx: usize) -> (&[u8], bool, Option<SocketAddr>) {
        (&self.buffers[idx][..self.lens[idx]], self.truncated[idx], self.peer(idx))
    }

    fn peer(&self, idx: usize) -> Option<SocketAddr> {
        let storage = &self.peers[idx];
        let len = self.peer_lens[idx] as usize;
        match i32::from(storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote an AF_INET address of at least this size, and
                // `sockaddr_storage` is aligned for every address type.
                let v4 = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in>()) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for AF_INET6.
                let v6 = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>()) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(v6.sin6_addr.s6_addr),
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Sends `replies[idx]` to the sender of datagram `idx` of the last receive, for each
    /// `idx` in `indices`, with as few system calls as the kernel allows. A reply the kernel
    /// refuses is skipped; the others are still sent.
    pub fn send(&mut self, socket: &UdpSocket, indices: &[usize], replies: &[Vec<u8>]) {
        let capacity = self.buffers.len();
        let mut first = 0;
        while first < indices.len() {
            let todo = &indices[first..indices.len().min(first + capacity)];
            for (slot, &idx) in todo.iter().enumerate() {
                let bytes = &replies[idx];
                self.iovecs[slot] = libc::iovec {
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                };
                let header = &mut self.headers[slot];
                *header = empty_header();
                header.msg_hdr.msg_name = (&raw mut self.peers[idx]).cast();
                header.msg_hdr.msg_namelen = self.peer_lens[idx];
                header.msg_hdr.msg_iov = &raw mut self.iovecs[slot];
                header.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `todo.len()` headers were just filled, each pointing at a live reply
            // (only read by the kernel) and a peer address of this batch with its length.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    todo.len() as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(sent) {
                Ok(sent) if sent > 0 => first += sent,
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::trace!(error = %err, "udp send failed");
                    // The first reply failed (e.g. an unreachable peer): skip it.
                    first += 1;
                }
            }
        }
    }

    /// The batch size.
    pub fn capacity(&self) -> usize {
        self.buffers.len()
    }
}

/// Returns freed heap memory to the kernel (glibc keeps it mapped otherwise). A no-op on
/// other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists; it takes the
    // allocator's locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("test");
        server.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("test");
        let client = UdpSocket::bind("127.0.0.1:0").expect("test");
        client.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("test");
        for payload in [&b"one"[..], b"two", b"three-is-too-long"] {
            client.send_to(payload, server.local_addr().expect("test")).expect("test");
        }
        let mut batch = UdpBatch::new(8, 8);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let n = batch.recv(&server).expect("test");
            for idx in 0..n {
                let (bytes, truncated, peer) = batch.packet(idx);
                assert_eq!(peer, Some(client.local_addr().expect("test")));
                seen.push((bytes.to_vec(), truncated));
            }
            let indices: Vec<usize> = (0..n).collect();
            let replies = vec![b"ok".to_vec(); n];
            batch.send(&server, &indices, &replies);
        }
        assert_eq!(
            seen,
            vec![(b"one".to_vec(), false), (b"two".to_vec(), false), (b"three-is".to_vec(), true)]
        );
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            assert_eq!(client.recv(&mut buf).expect("test"), 2);
        }
        release_free_memory();
    }
}

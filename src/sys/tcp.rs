//! A TCP connection started without waiting for it: std's
//! `TcpStream::connect` blocks until the handshake ends, and the add-on
//! forwarder (`crate::daemon::forwarder`) serves all its connections from
//! one thread, which must not stop for one slow server.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Starts a TCP connection to `addr` and returns at once. The socket is
/// non-blocking and close-on-exec. The connection is ready when the socket
/// polls writable; then `TcpStream::take_error` says whether it failed
/// (connect(2), `EINPROGRESS`).
pub fn connect_nonblocking(addr: &SocketAddr) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let r = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_in` is plain data; all zeroes is a valid
            // value (filled in below).
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: `sin` is a valid `sockaddr_in` of `len` bytes that
            // outlives the call; the descriptor is open (owned by `stream`).
            unsafe {
                libc::connect(
                    stream.as_raw_fd(),
                    std::ptr::from_ref(&sin).cast::<libc::sockaddr>(),
                    len,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: `sockaddr_in6` is plain data; all zeroes is a valid
            // value (filled in below).
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            // SAFETY: `sin6` is a valid `sockaddr_in6` of `len` bytes that
            // outlives the call; the descriptor is open (owned by `stream`).
            unsafe {
                libc::connect(
                    stream.as_raw_fd(),
                    std::ptr::from_ref(&sin6).cast::<libc::sockaddr>(),
                    len,
                )
            }
        }
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until `stream` polls writable.
    fn wait_writable(stream: &TcpStream) {
        let mut fds = [libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }];
        assert_eq!(super::super::poll(&mut fds, 5000).unwrap(), 1);
    }

    #[test]
    fn a_connection_completes_and_a_refused_one_reports_its_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect_nonblocking(&addr).unwrap();
        wait_writable(&stream);
        assert!(stream.take_error().unwrap().is_none());
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(stream.local_addr().unwrap(), peer);
        assert_ne!(
            crate::sys::status_flags(&stream).unwrap() & libc::O_NONBLOCK,
            0
        );
        // Nothing listens any more: refused, now or once polled.
        drop(listener);
        match connect_nonblocking(&addr) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            Ok(stream) => {
                wait_writable(&stream);
                let e = stream.take_error().unwrap().expect("refused");
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            }
        }
    }
}

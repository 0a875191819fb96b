//! A loopback TCP relay between the host and a lab namespace, either way: the browser runs on
//! the host and the controller's API listens on loopback inside the gateway namespace
//! (`start`); a lab gateway reaches the fleet's NATS server on the host's loopback through a
//! port on its own namespace's loopback (`into_namespace`). A socket keeps the namespace it was
//! made in, so the end inside the namespace is made by a thread that entered it; bytes are then
//! copied both ways until either side closes. Both ends are loopback addresses, so no traffic
//! leaves the machine.
use std::{
    fs::File,
    io::ErrorKind,
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// How often the accept loop checks whether the relay was dropped.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Connections accepted at most over a relay's life (every loop is bounded).
const MAX_CONNECTIONS: usize = 10_000;

pub struct Relay {
    /// Where the host connects: 127.0.0.1 on a free port.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays connections to the host's new loopback port to `target` inside namespace `ns`.
    pub fn start(ns: &str, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("relay listener");
        Relay::spawn(listener, Some(ns.to_owned()), target)
    }

    /// Relays connections to `127.0.0.1:port` inside namespace `ns` to `target` on the host.
    pub fn into_namespace(ns: &str, port: u16, target: SocketAddr) -> Relay {
        let ns_owned = ns.to_owned();
        let listener = std::thread::spawn(move || {
            enter(&ns_owned).unwrap_or_else(|e| panic!("entering {ns_owned}: {e}"));
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("relay listener in the namespace")
        })
        .join()
        .expect("binding in the namespace");
        Relay::spawn(listener, None, target)
    }

    /// Accepts on `listener`; each connection is relayed to `target`, connected from inside
    /// `connect_ns` when given.
    fn spawn(listener: TcpListener, connect_ns: Option<String>, target: SocketAddr) -> Relay {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("relay address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let acceptor = std::thread::spawn(move || {
            let mut accepted = 0;
            while !stopped.load(Ordering::Relaxed) && accepted < MAX_CONNECTIONS {
                match listener.accept() {
                    Ok((client, _)) => {
                        accepted += 1;
                        let ns = connect_ns.clone();
                        std::thread::spawn(move || relay(ns.as_deref(), client, target));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
                    Err(e) => panic!("relay accept: {e}"),
                }
            }
        });
        Relay { addr, stop, acceptor: Some(acceptor) }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Moves the calling thread into network namespace `ns`.
fn enter(ns: &str) -> std::io::Result<()> {
    let handle = File::open(crate::lab::Lab::ns_path(ns))?;
    nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// One connection: enter `ns` (when given), connect to `target`, copy both ways until either
/// side closes.
fn relay(ns: Option<&str>, client: TcpStream, target: SocketAddr) {
    if let Some(ns) = ns
        && enter(ns).is_err()
    {
        return;
    }
    client.set_nonblocking(false).expect("blocking client socket");
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else { return };
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else { return };
    let upstream = std::thread::spawn(move || copy(client_read, server_write));
    copy(server, client);
    let _ = upstream.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

//! A loopback TCP relay from the host into a lab namespace: the browser runs on the host, the
//! controller's API listens on loopback inside the gateway namespace. Each accepted connection
//! is answered by a thread that entered the namespace (a socket keeps the namespace it was made
//! in) and connects to the target there; bytes are then copied both ways until either side
//! closes. Both ends are loopback addresses, so no traffic leaves the machine.
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
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("relay address");
        let stop = Arc::new(AtomicBool::new(false));
        let ns = ns.to_owned();
        let stopped = stop.clone();
        let acceptor = std::thread::spawn(move || {
            let mut accepted = 0;
            while !stopped.load(Ordering::Relaxed) && accepted < MAX_CONNECTIONS {
                match listener.accept() {
                    Ok((client, _)) => {
                        accepted += 1;
                        let ns = ns.clone();
                        std::thread::spawn(move || relay(&ns, client, target));
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

/// One connection: enter `ns`, connect to `target`, copy both ways until either side closes.
fn relay(ns: &str, client: TcpStream, target: SocketAddr) {
    let Ok(handle) = File::open(crate::lab::Lab::ns_path(ns)) else { return };
    if nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
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

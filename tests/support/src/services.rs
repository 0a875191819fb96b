//! Private instances of the fleet's servers for tests, the demo and benchmarks: Debian's
//! `nats-server` with JetStream and PostgreSQL, each with its own data folder under a
//! temporary directory and its own loopback port, stopped (and its folder removed) on drop,
//! also when the test fails. `cargo xtask setup` installs both.
use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::checked;

pub const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// Where Debian installs PostgreSQL's server programs: `/usr/lib/postgresql/<major>/bin`.
pub const POSTGRES_LIB: &str = "/usr/lib/postgresql";
/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// Waits until something accepts TCP connections on `addr`; panics naming `what` after the
/// start timeout.
fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&addr, POLL).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr} within {START_TIMEOUT:?}");
        std::thread::sleep(POLL);
    }
}

/// A fresh folder under the system's temporary directory, named for `what` and this process;
/// the servers below remove theirs when they stop.
fn fresh_folder(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotgw-{what}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A test's own folder (see `fresh_folder`), removed with everything in it when dropped, also
/// when the test fails.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh folder for a test, removed when the returned guard is dropped.
pub fn scratch(what: &str) -> Scratch {
    Scratch(fresh_folder(what))
}

/// A private `nats-server -js` on 127.0.0.1.
pub struct NatsServer {
    pub port: u16,
    pub store: PathBuf,
    /// Configuration file given with `-c` (`start_with_config`).
    config: Option<PathBuf>,
    /// Runs JetStream (`-js`); a leaf node without it uses its hub's.
    jetstream: bool,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a JetStream server with its store in a fresh folder.
    pub fn start() -> NatsServer {
        Self::start_from(None, true)
    }

    /// Starts a JetStream server reading `conf` (nats-server's configuration syntax, such as an
    /// `authorization` block), written to a file beside its store. Port, address, JetStream
    /// and store folder stay the ones `start` uses (the command line overrides the file).
    pub fn start_with_config(conf: &str) -> NatsServer {
        let path = fresh_folder("nats-conf").join("nats-server.conf");
        std::fs::write(&path, conf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::start_from(Some(path), true)
    }

    /// Starts a leaf node of `hub` (a server started with `leafnodes { listen: ... }` on
    /// `hub_leaf_port`), as a site would run one: no JetStream of its own, so its clients use
    /// the hub's streams and buckets through it. `extra` is more configuration (such as the
    /// site's `authorization` block).
    pub fn start_leaf(hub_leaf_port: u16, extra: &str) -> NatsServer {
        let path = fresh_folder("nats-conf").join("nats-server.conf");
        let conf = format!(
            "leafnodes {{ reconnect: 1, remotes = [ {{ url: \"nats-leaf://127.0.0.1:{hub_leaf_port}\" }} ] }}\n{extra}\n"
        );
        std::fs::write(&path, conf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::start_from(Some(path), false)
    }

    fn start_from(config: Option<PathBuf>, jetstream: bool) -> NatsServer {
        assert!(Path::new(NATS_SERVER).exists(), "{NATS_SERVER} is missing: run `cargo xtask setup`");
        let mut server = NatsServer { port: free_port(), store: fresh_folder("nats"), config, jetstream, child: None };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store (after `kill9`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let mut command = Command::new(NATS_SERVER);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(&self.store);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NATS_SERVER}: {e}"));
        self.child = Some(child);
        wait_listening(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)), "nats-server");
    }

    /// Kills the server without letting it shut down (SIGKILL), as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.store);
        if let Some(folder) = self.config.as_deref().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

/// A private PostgreSQL cluster on 127.0.0.1, run as the `postgres` user (its programs refuse
/// root) in a folder that user owns; trust authentication, for loopback tests only.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    /// Creates and starts a cluster, with a database named `iotgw`.
    pub fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = fresh_folder("postgres");
        checked(Command::new("chown").arg("postgres:postgres").arg(&dir));
        let postgres = Postgres { port: free_port(), dir, bin };
        let data = postgres.data();
        postgres.as_postgres(&format!("{} -D {} -A trust -U postgres --no-sync", postgres.program("initdb"), data));
        postgres.as_postgres(&format!(
            "{} -D {data} -l {data}/server.log -w -o '-p {} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off' start",
            postgres.program("pg_ctl"),
            postgres.port
        ));
        postgres.as_postgres(&format!(
            "{} -h 127.0.0.1 -p {} -U postgres iotgw",
            postgres.program("createdb"),
            postgres.port
        ));
        postgres
    }

    /// `postgres://postgres@127.0.0.1:<port>/iotgw`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/iotgw", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn program(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn as_postgres(&self, command: &str) {
        checked(Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", command]).current_dir(&self.dir));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stop = format!("{} -D {} -m immediate stop", self.program("pg_ctl"), self.data());
        let _ = Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &stop]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed PostgreSQL's program folder.
fn postgres_bin() -> PathBuf {
    let majors = std::fs::read_dir(POSTGRES_LIB)
        .unwrap_or_else(|e| panic!("{POSTGRES_LIB}: {e}: run `cargo xtask setup` (it installs postgresql)"));
    majors
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .map(|major| Path::new(POSTGRES_LIB).join(major.to_string()).join("bin"))
        .unwrap_or_else(|| panic!("no PostgreSQL under {POSTGRES_LIB}: run `cargo xtask setup`"))
}

//! CPU time (user + system, `/proc/<pid>/stat`) a phase cost the processes it ran on, per
//! 100,000 events or reports: unlike a rate, it does not depend on how busy the machine was.
//!
//! - the hub process (all its threads);
//! - the hub's PostgreSQL backends (its connections, named by `application_name`), and the
//!   whole cluster: the postmaster, its live children (backends, autovacuum, WAL writer) and
//!   the children it reaped (their time is added to the postmaster's children's time), so the
//!   bench's own queries (the lag phase's polling) count in the cluster, not in the hub's share;
//! - nats-server.
use std::path::Path;

/// What the hub's connections call themselves (its `database_url`'s `application_name`).
pub const HUB_APPLICATION: &str = "iotgw-hub";
/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

/// The processes a phase runs on.
pub struct Meter {
    hub: u32,
    postmaster: u32,
    nats: u32,
}

/// CPU seconds so far (or of a phase: `since`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Times {
    pub hub: f64,
    pub hub_backends: f64,
    pub postgres: f64,
    pub nats: f64,
}

impl Meter {
    /// The hub process `hub`, the cluster whose data folder is `postgres_data`, and this
    /// process's nats-server child.
    pub fn new(hub: u32, postgres_data: &Path) -> Meter {
        let pid_file = postgres_data.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let postmaster = text.lines().next().and_then(|line| line.trim().parse().ok()).expect("postmaster pid");
        let me = std::process::id();
        let nats = processes()
            .find(|&pid| stat(pid).is_some_and(|s| s.parent == me && s.name == "nats-server"))
            .expect("the bench's nats-server");
        Meter { hub, postmaster, nats }
    }

    pub async fn read(&self, pool: &sqlx::PgPool) -> Times {
        let backends: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(HUB_APPLICATION)
            .fetch_all(pool)
            .await
            .expect("the hub's backends");
        let own = |pid: u32| stat(pid).map_or(0.0, |s| s.own);
        let postmaster = stat(self.postmaster).expect("the postmaster");
        let children: f64 = processes().filter_map(stat).filter(|s| s.parent == self.postmaster).map(|s| s.own).sum();
        Times {
            hub: own(self.hub),
            hub_backends: backends.into_iter().filter_map(|pid| u32::try_from(pid).ok()).map(own).sum(),
            postgres: postmaster.own + postmaster.reaped + children,
            nats: own(self.nats),
        }
    }
}

impl Times {
    pub fn since(self, before: Times) -> Times {
        Times {
            hub: self.hub - before.hub,
            hub_backends: self.hub_backends - before.hub_backends,
            postgres: self.postgres - before.postgres,
            nats: self.nats - before.nats,
        }
    }

    /// `<phase>-cpu: ...` for `count` things named `what`: seconds, and per 100,000.
    pub fn print(&self, phase: &str, count: usize, what: &str) {
        let per = |seconds: f64| seconds * 100_000.0 / count.max(1) as f64;
        println!(
            "{phase}-cpu: CPU s (per 100,000 {what}): hub process {:.1} ({:.2}), its PostgreSQL backends {:.1} \
             ({:.2}), PostgreSQL in all {:.1} ({:.2}), nats-server {:.1} ({:.2}); {count} {what}",
            self.hub,
            per(self.hub),
            self.hub_backends,
            per(self.hub_backends),
            self.postgres,
            per(self.postgres),
            self.nats,
            per(self.nats)
        );
    }
}

/// A process's parent, name and CPU seconds: its own, and its reaped children's.
struct Stat {
    parent: u32,
    name: String,
    own: f64,
    reaped: f64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (name) state ppid ...`: the name may hold spaces and parentheses, so split after
    // its last `)`.
    let (head, rest) = text.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (field 3) ppid (4) ... utime (14) stime (15) cutime (16) cstime (17).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    Some(Stat {
        parent: fields.get(1)?.parse().ok()?,
        name,
        own: (field(14)? + field(15)?) / TICKS,
        reaped: (field(16)? + field(17)?) / TICKS,
    })
}

fn processes() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc").expect("/proc").filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

//! Runs the real `iotgw` binary in the lab's gateway namespace, and talks to its pinned maps
//! the way a second tool on the router would.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::lab::Lab;

/// The `iotgw` binary under test: `IOTGW_BIN` (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn iotgw_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("IOTGW_BIN") {
        return bin.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/iotgw")
}

/// Keeps what `child` writes to its (piped) standard error in `log`, line by line, and echoes it
/// tagged `[tag]`, on a thread that ends when the process closes it.
pub fn keep_log(child: &mut Child, tag: &'static str, log: &Arc<Mutex<Vec<String>>>) {
    let stderr = child.stderr.take().expect("stderr piped");
    let log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
            log.lock().expect("log lock").push(line);
        }
    });
}

/// Stops `child` with SIGTERM, and with SIGKILL if it has not exited within `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The lab's veths have native XDP: tests attach natively unless they test the modes.
pub const DEFAULT_ATTACH_MODE: &str = "native";

/// How long the controller may take to load, verify and attach.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the controller process enters the gateway's network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// `nsenter --net=`: only the network namespace changes; bpffs is the host's, so the pins
    /// outlive the process.
    Nsenter,
    /// `ip netns exec`: also a mount namespace of its own with a fresh /sys, so the
    /// controller mounts a private bpffs whose pins die with it.
    IpNetnsExec,
    /// `nsenter --net=`, then `setpriv` keeps only these capabilities (`bpf`, `net_admin`...)
    /// in the bounding set: root as a systemd unit's `CapabilityBoundingSet` leaves it.
    NsenterWithCapabilities(&'static [&'static str]),
}

/// A controller process and the files it runs from.
pub struct Controller {
    /// How `spawn` starts the process (`Launcher::Nsenter` unless a test sets it).
    pub launcher: Launcher,
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub policy_dir: PathBuf,
    pub pin_path: PathBuf,
    ns: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Controller {
    /// Writes a configuration for `lab` and the given policy files, and starts `iotgw run`.
    pub fn start(lab: &Lab, policies: &[(&str, &str)], extra_config: &str) -> Controller {
        Controller::start_with_identity(lab, policies, "", extra_config)
    }

    /// `start`, with more keys (`key = value` lines) for the `[identity]` table it writes:
    /// that table always sets `state_dir` (inside the controller's folder), so tests add to it
    /// here rather than writing a second `[identity]` table in `extra_config`.
    pub fn start_with_identity(
        lab: &Lab,
        policies: &[(&str, &str)],
        identity_keys: &str,
        extra_config: &str,
    ) -> Controller {
        let _ = std::fs::remove_dir_all(Controller::dir_for(lab));
        Controller::start_in_prepared_dir(lab, policies, identity_keys, extra_config)
    }

    /// The controller's folder for `lab` (its store is `iotgw.db` in it).
    pub fn dir_for(lab: &Lab) -> PathBuf {
        std::env::temp_dir().join(format!("{}-ctl", lab.id))
    }

    /// `start_with_identity`, keeping what a test already put in `dir_for(lab)` (e.g. a store
    /// and a repository prepared with the CLI before the gateway starts).
    pub fn start_in_prepared_dir(
        lab: &Lab,
        policies: &[(&str, &str)],
        identity_keys: &str,
        extra_config: &str,
    ) -> Controller {
        Controller::start_with(lab, policies, identity_keys, extra_config, DEFAULT_ATTACH_MODE)
    }

    /// `start`, with `[datapath] attach_mode` set to `attach_mode` ("auto", "native",
    /// "generic") instead of `DEFAULT_ATTACH_MODE`.
    pub fn start_with_attach_mode(lab: &Lab, policies: &[(&str, &str)], attach_mode: &str) -> Controller {
        let _ = std::fs::remove_dir_all(Controller::dir_for(lab));
        Controller::start_with(lab, policies, "", "", attach_mode)
    }

    fn start_with(
        lab: &Lab,
        policies: &[(&str, &str)],
        identity_keys: &str,
        extra_config: &str,
        attach_mode: &str,
    ) -> Controller {
        let mut controller = Controller::write_files(lab, policies, identity_keys, extra_config, attach_mode);
        controller.spawn();
        controller
    }

    /// Writes the configuration and policy files for `lab` in a fresh folder without
    /// starting anything: for tests that run `iotgw run` to its exit (`run_to_exit`).
    pub fn configure(lab: &Lab, policies: &[(&str, &str)], extra_config: &str) -> Controller {
        let _ = std::fs::remove_dir_all(Controller::dir_for(lab));
        Controller::write_files(lab, policies, "", extra_config, DEFAULT_ATTACH_MODE)
    }

    /// Runs `iotgw run` in the gateway namespace until it exits, at most `timeout` (then it
    /// is killed and the test fails). Returns its exit code and its standard error.
    pub fn run_to_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let mut child = self.command().stderr(Stdio::piped()).spawn().expect("starting iotgw");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for iotgw") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("iotgw run did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status.code(), stderr)
    }

    /// `iotgw run` in the gateway's network namespace, entered the `launcher` way.
    fn command(&self) -> Command {
        let mut command = match self.launcher {
            Launcher::Nsenter => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net={}", Lab::ns_path(&self.ns)));
                command
            }
            Launcher::IpNetnsExec => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &self.ns]);
                command
            }
            Launcher::NsenterWithCapabilities(capabilities) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net={}", Lab::ns_path(&self.ns)));
                let keep: String = capabilities.iter().map(|c| format!(",+{c}")).collect();
                command.args(["setpriv", &format!("--bounding-set=-all{keep}"), "--inh-caps=-all", "--"]);
                command
            }
        };
        command
            .arg(iotgw_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null());
        command
    }

    fn write_files(
        lab: &Lab,
        policies: &[(&str, &str)],
        identity_keys: &str,
        extra_config: &str,
        attach_mode: &str,
    ) -> Controller {
        let dir = Controller::dir_for(lab);
        let policy_dir = dir.join("policies");
        std::fs::create_dir_all(&policy_dir).expect("policy dir");
        for (name, text) in policies {
            std::fs::write(policy_dir.join(name), text).expect("policy file");
        }
        let pin_path = PathBuf::from(format!("/sys/fs/bpf/{}", lab.id));
        let quarantine_host_mac = crate::lab::format_mac(lab.mac_of(&lab.quar, "eth0"));
        let config = dir.join("iotgw.toml");
        std::fs::write(
            &config,
            format!(
                "[datapath]\nlan_interface = \"lan0\"\nwan_interface = \"wan0\"\nquarantine_interface = \"quar0\"\n\
                 quarantine_host_mac = \"{quarantine_host_mac}\"\nattach_mode = \"{attach_mode}\"\npin_path = \"{}\"\n\n\
                 [store]\npath = \"{}\"\n\n[policy]\ndir = \"{}\"\nwatch = true\n\n\
                 [identity]\nstate_dir = \"{}\"\n{identity_keys}\n{extra_config}",
                pin_path.display(),
                dir.join("iotgw.db").display(),
                policy_dir.display(),
                dir.join("identity").display(),
            ),
        )
        .expect("config file");
        Controller {
            launcher: Launcher::Nsenter,
            child: None,
            dir,
            config,
            policy_dir,
            pin_path,
            ns: lab.gw.clone(),
            log: Arc::default(),
        }
    }

    /// Starts (or restarts) the process and waits until the datapath is configured. The log
    /// kept for `wait_for_log` starts afresh with each process.
    pub fn spawn(&mut self) {
        self.spawn_within(START_TIMEOUT);
    }

    /// `spawn`, waiting up to `timeout` for the datapath (a large store takes longer).
    pub fn spawn_within(&mut self, timeout: Duration) {
        self.log.lock().expect("log lock").clear();
        let mut child = self
            .command()
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", iotgw_bin().display()));
        keep_log(&mut child, "iotgw", &self.log);
        self.child = Some(child);
        self.wait_for_log("datapath configured", timeout);
    }

    /// The running process's id (nsenter execs iotgw, so it is iotgw's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until a log line containing `needle` appears (counting from the start).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.lock().expect("log lock").iter().any(|line| line.contains(needle)) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("iotgw exited ({status}) before logging {needle:?}");
            }
            assert!(Instant::now() < deadline, "iotgw did not log {needle:?} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Number of log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().expect("log lock").iter().filter(|line| line.contains(needle)).count()
    }

    /// The log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log.lock().expect("log lock").iter().filter(|line| line.contains(needle)).cloned().collect()
    }

    /// `kill -9`: no cleanup of any kind runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGHUP (policy reload).
    pub fn hangup(&self) {
        if let Some(child) = &self.child {
            // nsenter and `ip netns exec` exec iotgw, so the child's pid is iotgw's.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGHUP);
        }
    }

    /// The pinned maps, opened as a separate tool would.
    pub fn maps(&self) -> iotgw::datapath::maps::Maps {
        iotgw::datapath::maps::Maps::open_pinned(&self.pin_path).expect("pinned maps")
    }

    /// Frames of device `mac` that XDP dropped for reason `why` (0 for a device it never saw).
    pub fn device_drops(&self, mac: iotgw::device::Mac, why: u32) -> u64 {
        self.maps()
            .device_counters()
            .into_iter()
            .find(|(m, _)| *m == mac)
            .map(|(_, c)| c.drops[why as usize])
            .unwrap_or(0)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            terminate(child, Duration::from_secs(5));
        }
        // Unpin links and maps: the namespaces go away with the lab, the pins would not.
        let _ = iotgw::datapath::loader::detach_all(&self.pin_path);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

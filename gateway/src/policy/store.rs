//! The running policy and its atomic reload. `reload` reads and compiles a whole folder and
//! either returns the new `CompiledPolicy` or every error; `PolicyStore` swaps in a new
//! policy only when that succeeded, so a bad file leaves the running policy as it was.
//! `install` puts a staged set of files (a fleet bundle) in force through `swap`.
//! `set_generated` puts the classes the gateway generates (from MUD files, `crate::mud`) in
//! force beside the files: they are compiled with the folder's files every time, as sources of
//! their own, and hold the class ids `GENERATED_CLASS_IDS` no file may use.
//! `watch` turns file changes in the folder into debounced reload requests.
//! Reads the policy folder; writes nothing (the caller syncs the maps).
use std::{
    ops::RangeInclusive,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{
    compile::{CompiledPolicy, compile},
    error::{ErrorKind, Location, PolicyError},
    load::{load_paths, parse_sources, read_paths},
    model::Policy,
    swap,
};

/// Quiet time after the last change in the folder before a reload is asked for: editors
/// write a file in several steps (truncate, write, rename), and one reload should see them
/// all. Short enough that a change reaches the maps well within a second.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);
/// Pending raw file events between the watcher thread and the debounce task.
const WATCH_QUEUE: usize = 256;
/// Class ids of the classes the gateway generates (MUD files): the top quarter of the ids.
pub const GENERATED_CLASS_IDS: RangeInclusive<u16> = 0xc000..=0xffff;

/// Policy texts as `(path, text)`; the path is only used in messages.
pub type Sources = Vec<(PathBuf, String)>;

/// Checks the tables the policy files hold for another component (`[[response]]`, kept raw
/// in `Policy::responses`): the respond step passes `respond::rules::policy_errors`, so the
/// policy module needs to know nothing of response rules.
pub type Extension = fn(&Policy) -> Vec<PolicyError>;

/// No extension tables to check (tools that read only the access rules).
pub fn no_extension(_: &Policy) -> Vec<PolicyError> {
    Vec::new()
}

/// Loads and compiles `paths` (files, or folders of `*.toml`) and checks their extension
/// tables with `extension`: what `iotgw policy check`, `iotgw run` and every `reload` run, so
/// none of them accepts what another refuses. Every error of both is reported.
pub fn check<P: AsRef<Path>>(paths: &[P], extension: Extension) -> Result<CompiledPolicy, Vec<PolicyError>> {
    check_policy(&load_paths(paths)?, &[], extension)
}

/// `check` of policy texts already read (`(path, text)`; the path is only used in messages):
/// what the hub checks a bundle's files with before it signs them.
pub fn check_sources(sources: &[(PathBuf, String)], extension: Extension) -> Result<CompiledPolicy, Vec<PolicyError>> {
    check_policy(&parse_sources(sources)?, &[], extension)
}

/// Checks and compiles `policy`, whose classes from the sources named `generated` are the
/// gateway's own (the only ones that may use `GENERATED_CLASS_IDS`).
fn check_policy(
    policy: &Policy,
    generated: &[PathBuf],
    extension: Extension,
) -> Result<CompiledPolicy, Vec<PolicyError>> {
    let mut extension_errors = extension(policy);
    for class in &policy.classes {
        if GENERATED_CLASS_IDS.contains(&class.id.0) != generated.contains(class.at.file.as_ref()) {
            let kind = ErrorKind::ReservedClassId { name: class.name.clone(), id: class.id.0 };
            extension_errors.push(PolicyError::new(class.at.clone(), kind));
        }
    }
    match compile(policy) {
        Ok(compiled) if extension_errors.is_empty() => Ok(compiled),
        Ok(_) => Err(extension_errors),
        Err(mut errors) => {
            errors.extend(extension_errors);
            Err(errors)
        }
    }
}

/// Loads and compiles every `*.toml` file of `dir`.
pub fn reload(dir: &Path, extension: Extension) -> Result<CompiledPolicy, Vec<PolicyError>> {
    check(&[dir], extension)
}

/// Reads every `*.toml` file of `dir`; any that cannot be read is an error.
fn read_folder(dir: &Path) -> Result<Sources, Vec<PolicyError>> {
    let (sources, errors) = read_paths(&[dir]);
    if errors.is_empty() { Ok(sources) } else { Err(errors) }
}

/// Compiles the folder's files with the generated classes.
fn compile_with(
    folder: &[(PathBuf, String)],
    generated: &[(PathBuf, String)],
    extension: Extension,
) -> Result<CompiledPolicy, Vec<PolicyError>> {
    let all: Sources = folder.iter().chain(generated).cloned().collect();
    let generated: Vec<PathBuf> = generated.iter().map(|(path, _)| path.clone()).collect();
    check_policy(&parse_sources(&all)?, &generated, extension)
}

/// The policy in force. Only a fully checked and compiled policy ever replaces it.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    extension: Extension,
    current: Arc<CompiledPolicy>,
    /// Digest of the folder's policy files when they were last read (put in force or
    /// refused): see `unchanged`.
    read: Option<Vec<u8>>,
    /// The folder's files in force, compiled again with each new set of generated classes.
    folder: Sources,
    /// The generated classes in force (`set_generated`).
    generated: Sources,
}

impl PolicyStore {
    /// Loads `dir`; at startup a bad folder is an error (there is nothing to keep running).
    pub fn open(dir: &Path, extension: Extension) -> Result<Self, Vec<PolicyError>> {
        finish_swap(dir)?;
        let read = folder_digest(dir);
        let folder = read_folder(dir)?;
        let current = Arc::new(compile_with(&folder, &[], extension)?);
        Ok(Self { dir: dir.to_owned(), extension, current, read, folder, generated: Vec::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        Arc::clone(&self.current)
    }

    /// Re-reads the folder. On success the new policy is in force and returned; on failure
    /// the running policy is untouched and the errors say why.
    pub fn reload(&mut self) -> Result<Arc<CompiledPolicy>, Vec<PolicyError>> {
        finish_swap(&self.dir)?;
        self.read = folder_digest(&self.dir);
        let folder = read_folder(&self.dir)?;
        let next = Arc::new(compile_with(&folder, &self.generated, self.extension)?);
        self.folder = folder;
        self.current = Arc::clone(&next);
        Ok(next)
    }

    /// Puts `generated` (the gateway's own classes, replacing the last set) in force with the
    /// folder's files in force. On failure nothing changes and the errors say why.
    pub fn set_generated(&mut self, generated: Sources) -> Result<Arc<CompiledPolicy>, Vec<PolicyError>> {
        let next = Arc::new(compile_with(&self.folder, &generated, self.extension)?);
        self.generated = generated;
        self.current = Arc::clone(&next);
        Ok(next)
    }

    /// The folder's policy files are byte for byte those last read: a change event for them
    /// (the echo of an `install`'s renames, an editor saving the same text again) needs no
    /// reload.
    pub fn unchanged(&self) -> bool {
        self.read.is_some() && folder_digest(&self.dir) == self.read
    }

    /// Checks the files staged in `swap::staging_dir` and, when they pass, swaps them in for
    /// the folder's files (`swap::swap_in`) and puts them in force. A staged set that fails
    /// the checks changes nothing.
    pub fn install(&mut self) -> Result<Arc<CompiledPolicy>, Vec<PolicyError>> {
        let staged = read_folder(&swap::staging_dir(&self.dir))?;
        let next = Arc::new(compile_with(&staged, &self.generated, self.extension)?);
        swap::swap_in(&self.dir).map_err(|error| vec![swap_error(&self.dir, &error)])?;
        // Read again: the paths in messages and views are the folder's, not the staging's.
        self.folder = read_folder(&self.dir)?;
        self.read = folder_digest(&self.dir);
        self.current = Arc::clone(&next);
        Ok(next)
    }
}

/// SHA-256 over the names and contents of the folder's `*.toml` files; `None` when the folder
/// cannot be read (never equal to anything, so it reloads and reports why).
fn folder_digest(dir: &Path) -> Option<Vec<u8>> {
    use sha2::{Digest as _, Sha256};
    let mut digest = Sha256::new();
    for file in super::load::toml_files(dir).ok()? {
        let text = std::fs::read(&file).ok()?;
        let name = file.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default();
        for part in [&name, &text] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
    }
    Some(digest.finalize().to_vec())
}

/// Finishes a swap a crash interrupted before the folder is read: until it is finished the
/// folder may hold a mix of two sets, which must never be loaded.
fn finish_swap(dir: &Path) -> Result<(), Vec<PolicyError>> {
    match swap::finish_interrupted(dir) {
        Ok(true) => {
            tracing::warn!(dir = %dir.display(), "finished a policy swap that was interrupted");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(error) => Err(vec![swap_error(dir, &error)]),
    }
}

fn swap_error(dir: &Path, error: &std::io::Error) -> PolicyError {
    PolicyError::new(Location::file(&Arc::new(dir.to_owned())), ErrorKind::Swap(error.to_string()))
}

/// A request to reload the policy folder, sent by `watch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadRequest {
    /// Files that changed since the previous request (may be empty if the watcher lost
    /// track, which still warrants a reload).
    pub paths: Vec<PathBuf>,
}

/// Watches the folder and the handle that keeps it watched: dropping `PolicyWatcher` stops it.
pub struct PolicyWatcher {
    pub requests: mpsc::Receiver<ReloadRequest>,
    _watcher: notify::RecommendedWatcher,
}

/// Why the policy folder cannot be watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// inotify refused (missing folder, too many watches...).
    #[error("cannot watch {dir}: {source}")]
    Notify { dir: PathBuf, source: notify::Error },
    /// `watch` was called outside a tokio runtime.
    #[error("the policy watcher needs a tokio runtime")]
    NoRuntime,
}

/// Starts watching `dir` from inside a tokio runtime. Every burst of changes to `*.toml`
/// files becomes one `ReloadRequest` after `WATCH_DEBOUNCE` of quiet.
pub fn watch(dir: &Path) -> Result<PolicyWatcher, WatchError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
    let notify_error = |source| WatchError::Notify { dir: dir.to_owned(), source };
    let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<PathBuf>>(WATCH_QUEUE);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let paths = match event {
            Ok(event) if event.kind.is_access() => return,
            Ok(event) => event.paths,
            // A lost event still means "something changed": reload to be sure.
            Err(_) => Vec::new(),
        };
        let relevant = paths.is_empty() || paths.iter().any(|path| path.extension().is_some_and(|ext| ext == "toml"));
        if relevant {
            // A full queue already holds a pending change, which triggers the same reload.
            let _ = raw_tx.try_send(paths);
        }
    })
    .map_err(notify_error)?;
    watcher.watch(dir, RecursiveMode::NonRecursive).map_err(notify_error)?;
    let (tx, requests) = mpsc::channel(1);
    runtime.spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            let mut paths = first;
            loop {
                match tokio::time::timeout(WATCH_DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(more)) => paths.extend(more),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            paths.sort();
            paths.dedup();
            if tx.send(ReloadRequest { paths }).await.is_err() {
                return;
            }
        }
    });
    Ok(PolicyWatcher { requests, _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use gateway_ebpf::{lane, proto};

    use super::*;
    use crate::policy::{ErrorKind, PolicyId, PortRangeKey};

    fn shipped_dir() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"))
    }

    /// A scratch folder removed on drop (also when the test fails).
    struct ScratchDir(iotgw_test_support::services::Scratch);

    impl ScratchDir {
        fn new(name: &str) -> Self {
            Self(iotgw_test_support::services::scratch(&format!("policy-{name}")))
        }

        /// Copies the shipped policies in.
        fn with_shipped(name: &str) -> Self {
            let dir = Self::new(name);
            for file in crate::policy::load::toml_files(&shipped_dir()).expect("policies/") {
                std::fs::copy(&file, dir.0.join(file.file_name().expect("file name"))).expect("copy");
            }
            dir
        }
    }

    const GENERATED: &str =
        "[[class]]\nname = \"mud-49152\"\nid = 49152\n[[class.allow]]\nnets = [\"203.0.113.10/32\"]\n";

    #[test]
    fn generated_classes_are_compiled_with_the_files_and_survive_reloads() {
        let dir = ScratchDir::with_shipped("generated");
        let mut store = PolicyStore::open(&dir.0, no_extension).expect("shipped policies load");
        let generated = vec![(PathBuf::from("mud:https://mud.example.com/bulb.json"), GENERATED.to_owned())];
        let with = store.set_generated(generated).expect("a generated class in its range");
        assert!(with.classes.iter().any(|class| class.name == "mud-49152"));
        let reloaded = store.reload().expect("reload");
        assert!(reloaded.classes.iter().any(|class| class.name == "mud-49152"), "a reload keeps the generated classes");
        // A generated class the policy refuses (a name the files use) changes nothing.
        let clash = GENERATED.replace("mud-49152", "camera");
        let errors = store.set_generated(vec![(PathBuf::from("mud:x"), clash)]).expect_err("duplicate name");
        assert!(errors.iter().any(|e| e.to_string().contains("camera")), "{errors:?}");
        assert!(store.current().classes.iter().any(|class| class.name == "mud-49152"));
    }

    #[test]
    fn files_may_not_use_the_generated_class_ids_nor_generated_classes_others() {
        let dir = ScratchDir::with_shipped("reserved");
        std::fs::write(dir.0.join("squatter.toml"), GENERATED.replace("mud-49152", "squatter")).expect("write");
        let errors = reload(&dir.0, no_extension).expect_err("reserved id in a file");
        assert!(errors.iter().any(|e| matches!(e.kind, ErrorKind::ReservedClassId { id: 49152, .. })), "{errors:?}");
        std::fs::remove_file(dir.0.join("squatter.toml")).expect("remove");
        let mut store = PolicyStore::open(&dir.0, no_extension).expect("shipped policies load");
        let low = GENERATED.replace("id = 49152", "id = 900");
        let errors = store.set_generated(vec![(PathBuf::from("mud:x"), low)]).expect_err("generated id out of range");
        assert!(errors.iter().any(|e| matches!(e.kind, ErrorKind::ReservedClassId { id: 900, .. })), "{errors:?}");
    }

    #[test]
    fn shipped_policies_check_and_compile_to_the_documented_lanes() {
        let compiled = reload(&shipped_dir(), crate::respond::rules::policy_errors).unwrap_or_else(|errors| {
            panic!(
                "shipped policies must pass `policy check`:\n{}",
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
            )
        });
        let names: Vec<&str> = compiled.classes.iter().map(|class| class.name.as_str()).collect();
        for expected in ["camera", "smart-plug", "thermostat", "meter", "hub"] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        let gateway: ipnet::IpNet = "10.77.0.1/32".parse().expect("net");
        let find = |id: u32, proto_number: u8| {
            compiled
                .rules
                .iter()
                .find(|rule| rule.policy_id == PolicyId(id) && rule.proto == proto_number && rule.net == gateway)
                .map(|rule| rule.matches.iter().map(|admitted| admitted.remote).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let range = |first, last| PortRangeKey { first, last };
        assert_eq!(find(lane::ONBOARDING, proto::UDP), vec![range(53, 53), range(67, 68)]);
        assert_eq!(find(lane::ONBOARDING, proto::TCP), vec![range(53, 53), range(8443, 8443)]);
        assert_eq!(find(lane::QUARANTINE, proto::TCP), vec![range(8444, 8444)]);
        assert!(find(lane::QUARANTINE, proto::UDP).contains(&range(53, 53)));
        let camera = compiled.class("camera").expect("camera").policy_id;
        assert!(find(camera.0, proto::TCP).contains(&range(8444, 8444)), "camera keeps the update lane");
        assert!(compiled.classes.iter().all(|class| class.policy_id.0 >= lane::FIRST_CLASS_POLICY));
        assert_eq!(compiled.verdicts.quarantine, gateway_ebpf::verdict::REDIRECT);
        // Every file checks on its own, with only what it refers to (base-iot for `include`,
        // lanes for `update_lane`); naming a file twice is harmless.
        for file in crate::policy::load::toml_files(&shipped_dir()).expect("policies/") {
            let set = [file.clone(), shipped_dir().join("base.toml"), shipped_dir().join("lanes.toml")];
            check(&set, crate::respond::rules::policy_errors)
                .unwrap_or_else(|errors| panic!("{}: {errors:?}", file.display()));
        }
    }

    #[test]
    fn bad_file_keeps_the_running_policy_and_says_why() {
        let dir = ScratchDir::with_shipped("atomic");
        let mut store = PolicyStore::open(&dir.0, no_extension).expect("shipped policies load");
        let before = store.current();
        std::fs::write(dir.0.join("zz-bad.toml"), "[[class]]\nname = \"camera\"\nid = 99\n").expect("write");
        let errors = store.reload().expect_err("duplicate class refused");
        assert_eq!(errors.len(), 1);
        assert!(matches!(errors[0].kind, ErrorKind::DuplicateClass { .. }));
        assert!(errors[0].to_string().contains("zz-bad.toml:2:8"), "{}", errors[0]);
        assert!(Arc::ptr_eq(&before, &store.current()), "running policy replaced by a bad one");
        // Fixing the file brings the new class in.
        std::fs::write(dir.0.join("zz-bad.toml"), "[[class]]\nname = \"doorbell\"\nid = 99\n").expect("write");
        let after = store.reload().expect("fixed");
        assert!(after.class("doorbell").is_some());
        assert!(Arc::ptr_eq(&after, &store.current()));
    }

    #[test]
    fn an_installed_set_replaces_the_folder_whole_and_its_echo_needs_no_reload() {
        let dir = ScratchDir::with_shipped("install");
        let mut store = PolicyStore::open(&dir.0, no_extension).expect("shipped policies load");
        assert!(store.unchanged());
        let before = store.current();
        let stage = |extra: (&str, &str)| {
            let staging = swap::fresh_staging(&dir.0).expect("staging");
            for file in crate::policy::load::toml_files(&shipped_dir()).expect("policies/") {
                let name = file.file_name().expect("name").to_string_lossy().into_owned();
                swap::stage_file(&staging, &name, &std::fs::read(&file).expect("read")).expect("stage");
            }
            swap::stage_file(&staging, extra.0, extra.1.as_bytes()).expect("stage");
        };
        stage(("zz-bad.toml", "[[class]]\nname = \"camera\"\nid = 99\n"));
        let errors = store.install().expect_err("duplicate class refused");
        assert!(matches!(errors[0].kind, ErrorKind::DuplicateClass { .. }), "{errors:?}");
        assert!(Arc::ptr_eq(&before, &store.current()), "a refused set changes nothing");
        assert!(!dir.0.join("zz-bad.toml").exists());

        stage(("zz-doorbell.toml", "[[class]]\nname = \"doorbell\"\nid = 99\n"));
        let after = store.install().expect("installed");
        assert!(after.class("doorbell").is_some() && Arc::ptr_eq(&after, &store.current()));
        assert!(store.unchanged(), "the install's own renames need no reload");
        std::fs::write(dir.0.join("zz-doorbell.toml"), "[[class]]\nname = \"doorbell\"\nid = 98\n").expect("write");
        assert!(!store.unchanged(), "an edit after it does");
    }

    #[test]
    fn a_bad_response_rule_refuses_the_reload_and_says_where() {
        let dir = ScratchDir::with_shipped("response");
        // With the check the respond step passes: the reload must refuse its rules' errors.
        let mut store = PolicyStore::open(&dir.0, crate::respond::rules::policy_errors).expect("shipped policies load");
        let before = store.current();
        let bad = "# isolate\n[[response]]\nname = \"nuke\"\ndetectors = [\"scna\"]\naction = \"nuke\"\n";
        std::fs::write(dir.0.join("zz-response.toml"), bad).expect("write");
        let errors = store.reload().expect_err("bad response rules refused");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{text:#?}");
        assert!(errors.iter().all(|e| matches!(e.kind, ErrorKind::Response(_))), "{text:#?}");
        for line in &text {
            assert!(line.contains("zz-response.toml:2:1: [[response]] \"nuke\": "), "{line}");
        }
        assert!(text[0].contains("unknown detector \"scna\""), "{}", text[0]);
        assert!(text[1].contains("unknown action \"nuke\""), "{}", text[1]);
        assert!(Arc::ptr_eq(&before, &store.current()), "the running policy stays");
        // `iotgw policy check` runs the same check.
        assert!(check(&[&dir.0], crate::respond::rules::policy_errors).is_err());
    }

    #[test]
    fn unreadable_folder_is_an_error_at_open() {
        let errors = PolicyStore::open(Path::new("/nonexistent/iotgw-policies"), no_extension).expect_err("missing");
        assert!(matches!(errors[0].kind, ErrorKind::Read(_) | ErrorKind::NoFiles), "{errors:?}");
        let empty = ScratchDir::new("empty");
        let errors = PolicyStore::open(&empty.0, no_extension).expect_err("no files");
        assert_eq!(errors[0].kind, ErrorKind::NoFiles);
    }

    #[test]
    fn watching_outside_a_runtime_or_a_missing_folder_is_an_error() {
        assert!(matches!(watch(&shipped_dir()), Err(WatchError::NoRuntime)));
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let _guard = runtime.enter();
        assert!(matches!(watch(Path::new("/nonexistent/iotgw")), Err(WatchError::Notify { .. })));
    }

    #[tokio::test]
    async fn watcher_asks_for_one_reload_per_burst_of_changes() {
        let dir = ScratchDir::with_shipped("watch");
        let mut watcher = watch(&dir.0).expect("inotify watch");
        let started = std::time::Instant::now();
        for round in 0..3 {
            std::fs::write(dir.0.join("extra.toml"), format!("# edit {round}\n")).expect("write");
        }
        let request = tokio::time::timeout(Duration::from_secs(2), watcher.requests.recv())
            .await
            .expect("a reload request within 2 s")
            .expect("watcher alive");
        assert!(request.paths.iter().any(|path| path.ends_with("extra.toml")), "{request:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "request took {:?}", started.elapsed());
        // The burst was one request: nothing else is pending after the debounce.
        let more = tokio::time::timeout(WATCH_DEBOUNCE * 3, watcher.requests.recv()).await;
        assert!(more.is_err(), "a second request for the same burst: {more:?}");
        // Files other than *.toml are ignored.
        std::fs::write(dir.0.join("notes.txt"), "x").expect("write");
        let ignored = tokio::time::timeout(WATCH_DEBOUNCE * 3, watcher.requests.recv()).await;
        assert!(ignored.is_err(), "non-toml change triggered {ignored:?}");
    }
}

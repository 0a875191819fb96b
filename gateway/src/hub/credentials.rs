//! Broker credentials: one NKey user per gateway, allowed to publish only its own reports, take
//! only its own commands and read only its own policy keys, so a stolen gateway cannot speak
//! for another; and one for the hub. `iotgw hub provision-gateway` / `provision-hub` write the
//! seed and print the nats-server `authorization` entry to add.
//!
//! The JetStream API subjects are the ones async-nats sends (checked against nats-server 2.9 in
//! `tests/fleet_credentials.rs`): a consumer is created on
//! `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`, so the permission pins both the
//! gateway's consumer name and its filter. A gateway's replies come to its own inbox prefix
//! (`subjects::inbox_prefix`, set with `fleet::connect::Endpoint::inbox_prefix`), the only subjects it may
//! subscribe to.
//!
//! Policy keys: reads by key go through direct get (`$JS.API.DIRECT.GET.<stream>.<subject>`),
//! which names the key. Watching a key creates an unnamed ordered consumer
//! (`$JS.API.CONSUMER.CREATE.KV_iotgw_policy`), whose filter the subject does not name: a
//! gateway can read every bundle in the bucket that way. Bundles are signed policies, not
//! secrets; what matters, that nobody but the hub can write them, holds. When the connection
//! comes back (a broker restart, a network cut) async-nats recreates that consumer named, on
//! `$JS.API.CONSUMER.CREATE.KV_iotgw_policy.<name>.$KV.iotgw_policy.<key>`, and retries for ever
//! if refused: without that permission a gateway would stop taking bundles after its first
//! reconnect. Deleting the old consumer stays refused (that would let it delete other gateways'
//! consumers): the broker removes an ephemeral consumer whose subscriber is gone by itself.
use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use crate::fleet::subjects::{self, ReportKind};

/// What one broker user may publish and subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The stream behind the policy bucket.
fn policy_stream() -> String {
    format!("KV_{}", subjects::POLICY_BUCKET)
}

/// The JetStream API's subject prefix a client uses: `$JS.API`, or `$JS.<domain>.API` for a
/// client that names the hub's domain (`[fleet] jetstream_domain`, behind a site's leaf node).
fn api_prefix(domain: Option<&str>) -> String {
    match domain {
        Some(domain) => format!("$JS.{domain}.API"),
        None => "$JS.API".to_owned(),
    }
}

/// A gateway's permissions: its reports, its command consumer, its policy keys (its site's and
/// its `groups`'), its inbox. `domain` is its `[fleet] jetstream_domain`.
pub fn gateway_permissions(site: &str, gateway: &str, groups: &[String], domain: Option<&str>) -> Permissions {
    let api = api_prefix(domain);
    let consumer = subjects::command_consumer(site, gateway);
    let commands = subjects::COMMAND_STREAM;
    let policy = policy_stream();
    let bucket = subjects::POLICY_BUCKET;
    let mut publish: Vec<String> =
        [ReportKind::Event, ReportKind::Inventory, ReportKind::Health, ReportKind::CommandResult]
            .into_iter()
            .map(|kind| subjects::report(site, gateway, kind))
            .collect();
    publish.extend([
        format!("{api}.CONSUMER.CREATE.{commands}.{consumer}.{}", subjects::command(site, gateway)),
        format!("{api}.CONSUMER.INFO.{commands}.{consumer}"),
        format!("{api}.CONSUMER.MSG.NEXT.{commands}.{consumer}"),
        format!("$JS.ACK.{commands}.{consumer}.>"),
        format!("{api}.STREAM.INFO.{policy}"),
        format!("{api}.CONSUMER.CREATE.{policy}"),
        format!("$JS.FC.{policy}.>"),
    ]);
    let keys =
        std::iter::once(subjects::site_bundle_key(site)).chain(groups.iter().map(|g| subjects::group_bundle_key(g)));
    for key in keys {
        publish.push(format!("{api}.DIRECT.GET.{policy}.$KV.{bucket}.{key}"));
        publish.push(format!("{api}.CONSUMER.CREATE.{policy}.*.$KV.{bucket}.{key}"));
    }
    Permissions { publish, subscribe: vec![format!("{}.>", subjects::inbox_prefix(site, gateway))] }
}

/// The hub's permissions: commands to every gateway, the JetStream API (streams, its
/// consumers, the policy bucket), its inbox.
pub fn hub_permissions() -> Permissions {
    let publish = [
        subjects::command("*", "*"),
        "$JS.API.>".to_owned(),
        "$JS.ACK.>".to_owned(),
        "$JS.FC.>".to_owned(),
        format!("$KV.{}.>", subjects::POLICY_BUCKET),
    ];
    Permissions { publish: publish.into(), subscribe: vec!["_INBOX.>".to_owned()] }
}

/// A new NKey user: (public key `U...`, seed `SU...`).
pub fn new_user() -> (String, String) {
    let pair = nkeys::KeyPair::new_user();
    (pair.public_key(), pair.seed().expect("a generated key pair has its seed"))
}

/// One entry of nats-server's `authorization { users = [ ... ] }`.
pub fn user_entry(public_key: &str, permissions: &Permissions) -> String {
    // Quoted: `$JS...` unquoted would be a config variable.
    let list = |subjects: &[String]| subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "{{ nkey: \"{public_key}\", permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}",
        list(&permissions.publish),
        list(&permissions.subscribe)
    )
}

/// The `authorization` block of nats-server's configuration for `entries` (`user_entry`).
pub fn authorization(entries: &[String]) -> String {
    format!("authorization {{\n  users = [\n    {}\n  ]\n}}\n", entries.join("\n    "))
}

/// Writes `seed` to `dir/name`, readable by its owner only; refuses to replace a file there.
pub fn write_seed(dir: &Path, name: &str, seed: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    writeln!(file, "{seed}")?;
    file.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_may_publish_only_under_its_own_names() {
        let permissions = gateway_permissions("s1", "gw-1", &["retail".to_owned()], None);
        for subject in &permissions.publish {
            let own =
                subject.contains("s1.gw-1") || subject.contains("gw_s1~gw-1") || subject.contains("KV_iotgw_policy");
            assert!(own, "{subject}");
        }
        assert!(permissions.publish.iter().any(|s| s.ends_with("$KV.iotgw_policy.group.retail")));
        let watch_again = "$JS.API.CONSUMER.CREATE.KV_iotgw_policy.*.$KV.iotgw_policy.site.s1";
        assert!(permissions.publish.iter().any(|s| s == watch_again), "{:?}", permissions.publish);
        assert_eq!(permissions.subscribe, ["_INBOX.s1.gw-1.>"]);
    }

    #[test]
    fn the_entry_quotes_every_subject_and_seeds_are_never_overwritten() {
        let (public, seed) = new_user();
        assert!(public.starts_with('U') && seed.starts_with("SU"));
        let entry = user_entry(&public, &Permissions { publish: vec!["$JS.API.INFO".into()], subscribe: vec![] });
        assert!(entry.contains("allow: [\"$JS.API.INFO\"]"), "{entry}");

        let scratch = iotgw_test_support::services::scratch("seed");
        // Not there yet: writing the first seed creates it.
        let dir = scratch.join("seeds");
        let path = write_seed(&dir, "gw.nk", &seed).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_seed(&dir, "gw.nk", &seed).is_err());
    }
}

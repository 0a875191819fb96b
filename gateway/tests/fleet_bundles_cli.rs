//! `iotgw hub keygen` and `iotgw hub policy publish` end to end, against a real nats-server and
//! PostgreSQL: the key pair is written once; each publish is the next version of its scope, in
//! the bucket (verifying with the public key) and in `policy_bundles`, audited in `hub_audit`;
//! a policy folder that fails the checks is refused with the checker's messages and publishes
//! nothing.
use std::{
    path::Path,
    process::{Command, Output},
};

use iotgw::{
    fleet::{
        bundle::Bundle,
        connect::{self, Endpoint},
    },
    hub,
};
use iotgw_test_support::{
    run,
    services::{NatsServer, Postgres, scratch},
};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");

fn iotgw(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_iotgw")).args(args).env_remove("USER"))
}

fn publish(config: &Path, scope: &str, dir: &Path) -> Output {
    let config = config.to_str().expect("utf-8");
    let dir = dir.to_str().expect("utf-8");
    iotgw(&["hub", "policy", "publish", "--config", config, "--scope", scope, "--dir", dir, "--actor", "alice"])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn keygen_then_publish_signs_versions_records_them_and_refuses_a_bad_folder() {
    let nats = NatsServer::start();
    let postgres = Postgres::start();
    let work = scratch("hub-cli");
    let keys = work.join("keys");
    let keys_arg = keys.to_str().expect("utf-8");

    let made = iotgw(&["hub", "keygen", "--out", keys_arg]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let again = iotgw(&["hub", "keygen", "--out", keys_arg]);
    assert!(!again.status.success(), "a key is never overwritten");
    assert!(text(&again.stderr).contains("refusing to overwrite"), "{}", text(&again.stderr));

    let config = work.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "nats_url = \"{}\"\ndatabase_url = \"{}\"\nsigning_key = \"{}\"\n",
            nats.url(),
            postgres.url(),
            keys.join("bundle.pem").display()
        ),
    )
    .expect("hub.toml");

    for version in 1..=2 {
        let published = publish(&config, "site:s1", Path::new(SHIPPED));
        assert!(published.status.success(), "{}", text(&published.stderr));
        assert!(
            text(&published.stdout).contains(&format!("published site:s1 v{version}")),
            "{}",
            text(&published.stdout)
        );
    }

    let bad = work.join("bad");
    std::fs::create_dir_all(&bad).expect("bad folder");
    for file in iotgw::policy::load::toml_files(Path::new(SHIPPED)).expect("policies/") {
        std::fs::copy(&file, bad.join(file.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(bad.join("zz-bad.toml"), "[[class]]\nname = \"camera\"\nid = 99\n").expect("write");
    let refused = publish(&config, "site:s1", &bad);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("zz-bad.toml:2:8: duplicate class \"camera\""), "{stderr}");
    assert!(stderr.contains("1 error in the policy files"), "{stderr}");
    let bad_scope = publish(&config, "region:x", Path::new(SHIPPED));
    assert!(!bad_scope.status.success());

    // The bucket holds v2, signed with the key keygen wrote, for the scope it names.
    let url = nats.url();
    let client =
        connect::connect(&Endpoint { url: &url, name: "test", credentials: None, tls_ca: None, inbox_prefix: None })
            .await
            .expect("connect");
    let bucket = hub::bundles::ensure_bucket(&async_nats::jetstream::new(client)).await.expect("bucket");
    let value = bucket.get("site.s1").await.expect("get").expect("a bundle for site.s1");
    let bundle = Bundle::decode(&value).expect("decode");
    let public = iotgw::ota::keys::load_verifying(&keys.join("bundle.pub.pem")).expect("public key");
    bundle.verify(&public).expect("verifies with the public key keygen wrote");
    assert_eq!((bundle.version, bundle.actor.as_str(), bundle.scope.to_string()), (2, "alice", "site:s1".to_owned()));
    assert!(bundle.files.contains_key("base.toml") && !bundle.files.contains_key("zz-bad.toml"));

    let pool = hub::store::open(&postgres.url()).await.expect("database");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM policy_bundles WHERE scope = 'site.s1' ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("policy_bundles");
    assert_eq!(versions, [1, 2]);
    let audit: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT actor, action, site FROM hub_audit ORDER BY id").fetch_all(&pool).await.expect("audit");
    assert_eq!(audit, vec![("alice".into(), "policy_publish".into(), Some("s1".into())); 2]);
}

//! The JetStream streams the fleet runs on, created (or brought to this configuration) by the
//! hub at start: `IOTGW` keeps gateway reports until the hub has taken them, `IOTGW_CMD` keeps
//! commands until their gateway takes them or they expire.
use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::fleet::subjects;

use super::config::Streams;

/// Creates both streams, or updates their limits; idempotent.
pub async fn ensure(js: &jetstream::Context, limits: &Streams, command_ttl: Duration) -> Result<(), async_nats::Error> {
    let reports = StreamConfig {
        name: subjects::REPORT_STREAM.to_owned(),
        subjects: subjects::REPORT_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        // When full, refuse new reports (they stay in the gateways' outboxes) rather than
        // silently drop the oldest the hub has not read.
        discard: DiscardPolicy::New,
        max_age: Duration::from_secs(limits.max_age_days * 86_400),
        max_bytes: limits.max_bytes,
        duplicate_window: Duration::from_secs(limits.duplicate_window_secs),
        ..Default::default()
    };
    let commands = StreamConfig {
        name: subjects::COMMAND_STREAM.to_owned(),
        subjects: subjects::COMMAND_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        storage: StorageType::File,
        max_age: command_ttl,
        duplicate_window: command_ttl.min(Duration::from_secs(limits.duplicate_window_secs)),
        ..Default::default()
    };
    for config in [reports, commands] {
        match js.get_stream(&config.name).await {
            Ok(_) => {
                js.update_stream(&config).await?;
            }
            Err(_) => {
                js.create_stream(config).await?;
            }
        }
    }
    Ok(())
}

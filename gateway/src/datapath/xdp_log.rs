//! The XDP programs' own log lines: reads the `AYA_LOGS` ring buffer that aya-log-ebpf writes
//! (only on rare, operator-relevant paths: see gateway-ebpf's `rare` module) and re-emits each
//! record through the `log` facade, which tracing-subscriber bridges into `tracing` with the
//! level mapped one to one (error → ERROR, warn → WARN...) and the eBPF module path as target
//! (`iotgw_xdp::rare`). Writes nothing but log lines.
use aya::Ebpf;
use tokio::io::unix::AsyncFd;

use crate::shutdown::Shutdown;

/// Symbol of aya-log-ebpf's level filter inside the object (a global patched at load).
const LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";

/// The records' reader, taken out of the loaded object.
pub struct XdpLog {
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
}

/// Why the reader could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpLogError {
    /// The object has no `AYA_LOGS` map, or it could not be opened as a ring buffer.
    #[error("aya-log ring buffer: {0}")]
    Open(#[from] aya_log::Error),
    /// The ring buffer's fd could not be registered with the runtime.
    #[error("registering the aya-log ring buffer with tokio: {0}")]
    Register(#[from] std::io::Error),
}

impl XdpLog {
    /// Takes the `AYA_LOGS` map out of `ebpf`. Call it once, after loading.
    pub fn take(ebpf: &mut Ebpf) -> Result<XdpLog, XdpLogError> {
        Ok(XdpLog { logger: aya_log::EbpfLogger::init(ebpf)? })
    }

    /// Forwards records until shutdown. Must run inside a tokio runtime.
    pub async fn forward(self, mut shutdown: Shutdown) -> Result<(), XdpLogError> {
        // The AsyncFd owns the logger and so its ring buffer's fd, for as long as it is
        // registered: the safe case of the deprecated `with_interest` (see `events`).
        #[expect(deprecated, reason = "the AsyncFd owns the logger and its fd")]
        let mut fd = AsyncFd::with_interest(self.logger, tokio::io::Interest::READABLE)?;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                guard = fd.readable_mut() => {
                    let mut guard = guard?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
        // Whatever was written before shutdown still reaches the log.
        fd.get_mut().flush();
        Ok(())
    }
}

/// aya-log-ebpf's level for the most verbose level `tracing` has enabled anywhere, so that
/// statements nobody would see cost the programs nothing but one global load and compare.
pub fn level_for(filter: tracing::level_filters::LevelFilter) -> u8 {
    use aya_log::Level;
    use tracing::level_filters::LevelFilter;
    match filter {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => Level::Error as u8,
        LevelFilter::WARN => Level::Warn as u8,
        LevelFilter::INFO => Level::Info as u8,
        LevelFilter::DEBUG => Level::Debug as u8,
        _ => Level::Trace as u8,
    }
}

/// Patches the level filter into an object about to be loaded.
pub fn set_level<'a>(loader: &mut aya::EbpfLoader<'a>, level: &'a u8) {
    // `must_exist = false`: an object without log statements has no such global.
    loader.override_global(LEVEL_GLOBAL, level, false);
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    #[test]
    fn level_filter_maps_onto_aya_log_levels_in_order() {
        assert_eq!(level_for(LevelFilter::OFF), 0, "nothing logged at all");
        assert_eq!(level_for(LevelFilter::ERROR), aya_log::Level::Error as u8);
        assert_eq!(level_for(LevelFilter::WARN), aya_log::Level::Warn as u8);
        assert_eq!(level_for(LevelFilter::INFO), aya_log::Level::Info as u8);
        assert_eq!(level_for(LevelFilter::DEBUG), aya_log::Level::Debug as u8);
        assert_eq!(level_for(LevelFilter::TRACE), aya_log::Level::Trace as u8);
        // The eBPF side enables `level as u8 <= AYA_LOG_LEVEL`: WARN lets error and warn pass.
        assert!(aya_log::Level::Error as u8 <= level_for(LevelFilter::WARN));
        assert!(aya_log::Level::Info as u8 > level_for(LevelFilter::WARN));
    }
}

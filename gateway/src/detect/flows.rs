//! Detectors over a device's recent flows: scans (many hosts, or many ports on one host) and
//! flow floods (new flows per window far above the baseline).
use super::*;

/// Many hosts, or many ports on one host, within the window.
pub(super) fn scan(
    config: &Config,
    state: &DeviceState,
    flow: &FlowObservation,
    baseline: Option<&DeviceBaseline>,
) -> Vec<Trigger> {
    let hosts: HashSet<IpAddr> = state.recent.iter().map(|f| f.dst).filter(|d| !is_group_or_unspecified(*d)).collect();
    let ports: HashSet<u16> = state.recent.iter().filter(|f| f.dst == flow.dst).map(|f| f.port).collect();
    let learnt_hosts = baseline.map(|b| b.profile().windows.max[feature::DISTINCT_HOSTS]).unwrap_or_default();
    let host_limit = (config.scan_factor * learnt_hosts).max(config.scan_hosts as f64);
    let window = config.window().as_secs();
    let telnet = state.recent.iter().filter(|f| TELNET_PORTS.contains(&f.port)).count();
    let telnet_share = telnet as f64 / state.recent.len().max(1) as f64;
    let mut triggers = Vec::new();
    let evidence = || state.recent.iter().rev().take(EVIDENCE_FLOWS).map(|f| f.text.clone()).collect::<Vec<_>>();
    if hosts.len() as f64 > host_limit {
        let base = alert::ratio_score(hosts.len() as f64, host_limit);
        // Mirai and its descendants scan telnet: a scan mostly on 23/2323 is worth more.
        let bonus = if telnet_share > 0.5 { 0.2 } else { 0.0 };
        let score = (base + bonus).min(1.0);
        triggers.push(Trigger {
            detector: DetectorKind::Scan,
            score,
            expected: format!(
                "at most {host_limit:.0} distinct hosts per {window} s (learnt maximum {learnt_hosts:.0} × {}, at least {})",
                config.scan_factor, config.scan_hosts
            ),
            observed: format!(
                "{} distinct hosts in {window} s, {:.0}% of the flows to telnet (23/2323){}; score = 1 − ½·{host_limit:.0}/{} {}= {score:.2}",
                hosts.len(),
                telnet_share * 100.0,
                if bonus > 0.0 { ", Mirai-style" } else { "" },
                hosts.len(),
                if bonus > 0.0 { "+ 0.2 (telnet) " } else { "" },
            ),
            flows: evidence(),
            observation: Some(Observation::Rate {
                measure: Measure::ScanHosts,
                observed: hosts.len() as f64,
                limit: host_limit,
            }),
        });
    }
    if ports.len() > config.scan_ports {
        let score = alert::ratio_score(ports.len() as f64, config.scan_ports as f64);
        triggers.push(Trigger {
            detector: DetectorKind::Scan,
            score,
            expected: format!("at most {} distinct ports on one host per {window} s", config.scan_ports),
            observed: format!(
                "{} distinct ports on {} in {window} s; score = 1 − ½·{}/{} = {score:.2}",
                ports.len(),
                flow.dst,
                config.scan_ports,
                ports.len()
            ),
            flows: evidence(),
            observation: Some(Observation::Rate {
                measure: Measure::ScanPorts,
                observed: ports.len() as f64,
                limit: config.scan_ports as f64,
            }),
        });
    }
    triggers
}

/// New flows per window far above the baseline (SYN floods with rotating source ports show
/// up here before the per-second counters arrive).
pub(super) fn flow_flood(
    config: &Config,
    state: &DeviceState,
    reference: Option<(&Profile, Option<&str>)>,
) -> Vec<Trigger> {
    let flows = state.recent.len();
    let (limit, basis) = match reference {
        Some((p, class)) => {
            let learnt = p.windows.max[feature::NEW_FLOWS];
            (
                (config.flood_factor * learnt).max(config.flood_flows as f64 / 4.0),
                format!("{}× {} maximum of {learnt:.0}", config.flood_factor, super::traffic::learnt_by(class)),
            )
        }
        None => (config.flood_flows as f64, "absolute limit, no baseline yet".to_owned()),
    };
    if (flows as f64) <= limit {
        return Vec::new();
    }
    let score = alert::ratio_score(flows as f64, limit);
    let window = config.window().as_secs();
    vec![Trigger {
        detector: DetectorKind::Flood,
        score,
        expected: format!("at most {limit:.0} new flows per {window} s ({basis})"),
        observed: format!("{flows} new flows in {window} s; score = 1 − ½·{limit:.0}/{flows} = {score:.2}"),
        flows: state.recent.iter().rev().take(EVIDENCE_FLOWS).map(|f| f.text.clone()).collect(),
        observation: Some(Observation::Rate { measure: Measure::NewFlows, observed: flows as f64, limit }),
    }]
}

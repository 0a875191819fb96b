//! Learning an alert as normal, per detector: the same input raises no alert once its
//! observations are learnt, and raises it again once they are unlearnt. Observations a
//! baseline must never take (a forged ARP sender, a claim on the gateway's address, a rate far
//! above its limit) are not offered or are refused.
use super::*;
use crate::baseline::learned::{self, Edit, Exception};

/// Time between two runs of a scenario: longer than the calm period and every window.
const GAP: Duration = Duration::from_secs(600);

/// Runs `inputs`, lets every incident calm down, and returns the alerts of `kind` (open and
/// resolved: the resolved ones carry the peaks of the rates).
fn raised(detector: &mut Detector, kind: DetectorKind, inputs: &[Input]) -> Vec<Alert> {
    let mut alerts = run(detector, inputs);
    let last = inputs.iter().filter_map(Input::time).max().expect("a scenario has inputs");
    alerts.extend(detector.tick(last + Duration::from_secs(DEFAULT_CALM.as_secs() + 1)));
    alerts.into_iter().filter(|a| a.detector == kind).collect()
}

/// What an analyst's "learn" takes from the alert records: every observation they carry.
fn exceptions(alerts: &[Alert]) -> Vec<Exception> {
    let observations = alerts.iter().flat_map(|a| a.observations.iter().map(move |o| (a.mac, *o)));
    observations.map(|(mac, observation)| Exception { alert_id: 1, mac, observation }).collect()
}

/// `scenario` raises `kind`; learnt, the same inputs later raise none of it; unlearnt, they
/// raise it again.
fn learnt_then_unlearnt(kind: DetectorKind, scenario: impl Fn(SystemTime) -> Vec<Input>) {
    let (mut detector, now) = baselined();
    let first = raised(&mut detector, kind, &scenario(now));
    assert!(first.iter().any(|a| !a.resolved), "the scenario raises no {kind}");
    let learnt = exceptions(&first);
    assert!(!learnt.is_empty(), "{kind} offers nothing to learn: {first:#?}");
    for exception in &learnt {
        assert_eq!(learned::check(&exception.observation), Ok(()), "{exception:?}");
    }
    let mac = learnt[0].mac;
    detector.baselines_mut().apply_learned(Edit::Learn(learnt));
    let again = raised(&mut detector, kind, &scenario(now + GAP));
    assert!(again.is_empty(), "learnt {kind} raised {again:#?}");
    detector.baselines_mut().apply_learned(Edit::Unlearn { alert_id: 1, mac });
    let unlearnt = raised(&mut detector, kind, &scenario(now + 2 * GAP));
    assert!(unlearnt.iter().any(|a| !a.resolved), "unlearnt {kind} raised nothing");
}

#[test]
fn a_learnt_new_destination_is_quiet_until_unlearnt() {
    let meter = synthetic::meter(1);
    learnt_then_unlearnt(DetectorKind::NewDestination, |at| {
        vec![synthetic::tcp_syn(meter.mac, at, IpAddr::V4(meter.ip), "45.9.148.3".parse().unwrap(), 40_001, 4_444)]
    });
}

#[test]
fn a_learnt_destination_covers_its_service_only() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let to =
        |at, port| synthetic::tcp_syn(meter.mac, at, IpAddr::V4(meter.ip), "45.9.148.3".parse().unwrap(), 40_001, port);
    let first = raised(&mut detector, DetectorKind::NewDestination, &[to(now, 4_444)]);
    detector.baselines_mut().apply_learned(Edit::Learn(exceptions(&first)));
    let other_port = raised(&mut detector, DetectorKind::NewDestination, &[to(now + GAP, 22)]);
    assert!(other_port.iter().any(|a| !a.resolved), "tcp/22 to the learnt prefix is still new");
}

#[test]
fn a_learnt_lateral_peer_is_quiet_until_unlearnt() {
    let (plug, meter) = (synthetic::plug(1), synthetic::meter(1));
    learnt_then_unlearnt(DetectorKind::LateralMovement, |at| {
        vec![synthetic::tcp_syn(plug.mac, at, IpAddr::V4(plug.ip), IpAddr::V4(meter.ip), 41_000, 23)]
    });
}

#[test]
fn a_learnt_host_scan_is_quiet_until_unlearnt() {
    let plug = synthetic::plug(1);
    learnt_then_unlearnt(DetectorKind::Scan, |at| synthetic::telnet_scan(plug.mac, plug.ip, at, 100, 200, 1));
}

#[test]
fn a_learnt_port_scan_is_quiet_until_unlearnt() {
    let plug = synthetic::plug(1);
    let target: IpAddr = "10.77.1.1".parse().unwrap();
    learnt_then_unlearnt(DetectorKind::Scan, |at| {
        (0..40u16)
            .map(|i| {
                let time = at + Duration::from_millis(u64::from(i) * 20);
                synthetic::tcp_syn(plug.mac, time, IpAddr::V4(plug.ip), target, 50_000, 1 + i * 7)
            })
            .collect()
    });
}

#[test]
fn a_learnt_packet_rate_is_quiet_until_unlearnt() {
    let meter = synthetic::meter(1);
    learnt_then_unlearnt(DetectorKind::Flood, |at| {
        vec![synthetic::traffic(meter.mac, at, Duration::from_secs(1), 1_000 * 64, 1_000, 0, 0)]
    });
}

#[test]
fn a_learnt_new_flow_rate_is_quiet_until_unlearnt() {
    let camera = synthetic::camera(1);
    let target: IpAddr = "192.0.2.80".parse().unwrap();
    learnt_then_unlearnt(DetectorKind::Flood, |at| {
        (0..600u32)
            .map(|i| {
                let time = at + Duration::from_millis(u64::from(i));
                synthetic::tcp_syn(camera.mac, time, IpAddr::V4(camera.ip), target, 10_000 + i as u16, 8883)
            })
            .collect()
    });
}

#[test]
fn a_learnt_volume_is_quiet_until_unlearnt() {
    let camera = synthetic::camera(1);
    learnt_then_unlearnt(DetectorKind::Volume, |at| {
        (0..5)
            .map(|s| {
                let start = at + Duration::from_secs(s);
                synthetic::traffic(camera.mac, start, Duration::from_secs(1), 600_000, 420, 90_000, 1_400)
            })
            .collect()
    });
}

#[test]
fn a_learnt_arp_claim_is_quiet_until_unlearnt() {
    let (camera, plug) = (synthetic::camera(1), synthetic::plug(1));
    // The plug holds its address; the camera (a failover partner, say) claims it too.
    learnt_then_unlearnt(DetectorKind::ArpSpoof, |at| {
        vec![
            synthetic::arp(plug.mac, at, plug.mac, plug.ip, plug.ip, true),
            synthetic::arp(camera.mac, at + Duration::from_secs(1), camera.mac, plug.ip, synthetic::GATEWAY, true),
        ]
    });
}

#[test]
fn a_learnt_gratuitous_arp_rate_is_quiet_until_unlearnt() {
    let plug = synthetic::plug(1);
    learnt_then_unlearnt(DetectorKind::ArpSpoof, |at| {
        (0..30)
            .map(|i| synthetic::arp(plug.mac, at + Duration::from_millis(i * 100), plug.mac, plug.ip, plug.ip, false))
            .collect()
    });
}

#[test]
fn forged_senders_and_claims_on_the_gateway_offer_nothing_to_learn() {
    let (mut detector, now) = baselined();
    let (camera, plug) = (synthetic::camera(1), synthetic::plug(1));
    let inputs = [
        synthetic::arp(GATEWAY_MAC, now, GATEWAY_MAC, synthetic::GATEWAY, Ipv4Addr::new(10, 77, 2, 1), true),
        synthetic::arp(
            camera.mac,
            now + Duration::from_secs(1),
            camera.mac,
            synthetic::GATEWAY,
            synthetic::GATEWAY,
            true,
        ),
        synthetic::arp(plug.mac, now + Duration::from_secs(2), GATEWAY_MAC, plug.ip, plug.ip, true),
    ];
    let alerts = raised(&mut detector, DetectorKind::ArpSpoof, &inputs);
    assert_eq!(alerts.iter().filter(|a| !a.resolved).count(), 2, "{alerts:#?}");
    assert!(exceptions(&alerts).is_empty(), "{alerts:#?}");
}

#[test]
fn a_flood_far_above_its_limit_is_refused() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    let flood = synthetic::traffic(meter.mac, now, Duration::from_secs(1), 25_000 * 64, 25_000, 0, 0);
    let alerts = raised(&mut detector, DetectorKind::Flood, &[flood]);
    let exceptions = exceptions(&alerts);
    assert!(!exceptions.is_empty());
    for exception in exceptions {
        assert!(
            matches!(learned::check(&exception.observation), Err(learned::NotLearnable::TooFar { .. })),
            "{exception:?}"
        );
    }
}

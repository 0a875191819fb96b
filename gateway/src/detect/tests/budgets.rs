//! Budgets XDP holds devices to (`detect::budget`), and the alerts their crossings raise.
use super::*;
use crate::datapath::budget::{Budget, BudgetCrossing, Measure as Budgeted};

fn crossing(mac: Mac, time: SystemTime, measure: Budgeted, budget: &Budget, elapsed: Duration) -> Input {
    // The crossing frame: one packet, of 1 400 bytes.
    let (limit, window, counted) = match measure {
        Budgeted::Packets => (budget.packets, budget.packet_window, budget.packets + 1),
        Budgeted::Bytes => {
            let limit = budget.bytes.expect("a byte budget");
            (limit, budget.byte_window, limit + 1_400)
        }
    };
    Input::Datapath(DatapathEvent::Budget(BudgetCrossing { time, mac, measure, limit, window, counted, elapsed }))
}

#[test]
fn budgets_are_the_flood_and_volume_limits_of_the_baseline_then_of_the_type_then_absolute() {
    let (camera, newcomer, stranger) = (synthetic::camera(1), synthetic::camera(7), synthetic::plug(9));
    let classes = vec![
        Input::Class { mac: camera.mac, class: "ip-camera".into() },
        Input::Class { mac: newcomer.mac, class: "ip-camera".into() },
    ];
    let (detector, _) = baselined_fleet(std::slice::from_ref(&camera), classes);
    let config = Config::default();
    let own = detector.baselines().rate_reference(camera.mac).expect("baselined").0;
    let budget = detector.budget(camera.mac).expect("a device has a budget");
    let learnt_packets = own.windows.max[feature::TX_PACKETS];
    assert_eq!(budget.packets, (config.flood_factor * learnt_packets).max(config.flood_min_pps) as u64);
    assert_eq!(budget.packet_window, RATE_SPAN);
    let bytes = budget.bytes.expect("a baselined device has a byte budget");
    assert!(bytes as f64 >= config.volume_factor * own.windows.max[feature::TX_BYTES], "{budget:?}");
    assert!(bytes >= config.volume_min_bytes);
    assert_eq!(budget.byte_window, config.window());
    // A camera still learning is held to the baselined cameras' limits, ...
    assert_eq!(detector.budget(newcomer.mac), Some(budget));
    // ... a device with neither a baseline nor a type to the absolute flood limit, no bytes.
    let absolute = detector.budget(stranger.mac).expect("a budget");
    assert_eq!((absolute.packets, absolute.bytes), (config.flood_pps as u64, None));
}

#[test]
fn the_gateway_forwarding_for_the_lan_has_no_budget() {
    let config = Config { gateway_macs: vec![GATEWAY_MAC], ..Default::default() };
    let detector = Detector::new(config, Baselines::new(short_config()));
    assert_eq!(detector.budget(GATEWAY_MAC), None);
}

#[test]
fn a_crossed_byte_budget_is_a_volume_alert_at_once_and_the_sweep_joins_its_incident() {
    let (mut detector, now) = baselined();
    let camera = synthetic::camera(1);
    let budget = detector.budget(camera.mac).unwrap();
    let alerts = detector.handle(&crossing(camera.mac, now, Budgeted::Bytes, &budget, Duration::from_millis(40)));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!((alert.detector, alert.mac), (DetectorKind::Volume, camera.mac));
    assert!(alert.score > 0.5, "{alert:#?}");
    assert!(alert.observed.contains("in the first 40 ms of a 10 s window (XDP"), "{}", alert.observed);
    assert!(alert.expected.contains("bytes sent per 10 s"), "{}", alert.expected);
    // The counter sweep then sees the same upload: one incident, not a second alert.
    let sweep = synthetic::traffic(camera.mac, now, Duration::from_millis(250), budget.bytes.unwrap() + 1, 800, 0, 0);
    assert!(open_alerts(&detector.handle(&sweep)).iter().all(|a| a.detector != DetectorKind::Volume));
}

#[test]
fn a_crossed_packet_budget_is_a_flood_scored_by_the_rate_it_was_crossed_at() {
    let meter = synthetic::meter(1);
    let flood_score = |elapsed: Duration| {
        let (mut detector, now) = baselined();
        let budget = detector.budget(meter.mac).unwrap();
        let alerts = detector.handle(&crossing(meter.mac, now, Budgeted::Packets, &budget, elapsed));
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(alerts[0].detector, DetectorKind::Flood);
        alerts[0].score
    };
    // Crossed 15 ms into the second: a rate far above the limit.
    assert!(flood_score(Duration::from_millis(15)) > 0.95);
    // Crossed at the end of the second: just above it.
    let late = flood_score(Duration::from_millis(999));
    assert!((0.5..0.6).contains(&late), "{late}");
}

#[test]
fn a_crossing_under_the_limit_in_force_now_raises_nothing() {
    let (mut detector, now) = baselined();
    let meter = synthetic::meter(1);
    // A budget far below the limits in force (as one written before a baseline would be).
    let stale =
        Budget { packets: 100, packet_window: RATE_SPAN, bytes: Some(1_000), byte_window: Duration::from_secs(10) };
    for measure in [Budgeted::Packets, Budgeted::Bytes] {
        let alerts = detector.handle(&crossing(meter.mac, now, measure, &stale, Duration::from_millis(999)));
        assert!(alerts.is_empty(), "{measure:?}: {alerts:#?}");
    }
}

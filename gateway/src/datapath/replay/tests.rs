use etherparse::PacketBuilder;

use super::*;

const DEVICE: [u8; 6] = [0x00, 0x17, 0x88, 0x24, 0x76, 0xff];
const ROUTER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

fn t(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn syn_frame() -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(DEVICE, ROUTER)
        .ipv4([192, 168, 1, 20], [93, 184, 216, 34], 64)
        .tcp(40_000, 443, 1, 14_600)
        .syn()
        .options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::WindowScale(4),
        ])
        .unwrap();
    let mut frame = Vec::new();
    builder.write(&mut frame, &[]).unwrap();
    frame
}

fn dns_frame() -> Vec<u8> {
    let builder =
        PacketBuilder::ethernet2(DEVICE, ROUTER).ipv4([192, 168, 1, 20], [192, 168, 1, 1], 64).udp(50_000, 53);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0xab; 30]).unwrap();
    frame
}

/// A WeMo Insight's SSDP announcement to the UPnP multicast group.
fn ssdp_frame() -> Vec<u8> {
    let notify = b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: urn:Belkin:device:insight:1\r\n\
NTS: ssdp:alive\r\nUSN: uuid:Insight-1_0-221603K12003FD::urn:Belkin:device:insight:1\r\n\r\n";
    let builder = PacketBuilder::ethernet2(DEVICE, [0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa])
        .ipv4([192, 168, 1, 20], [239, 255, 255, 250], 4)
        .udp(3_082, 1_900);
    let mut frame = Vec::new();
    builder.write(&mut frame, notify).unwrap();
    frame
}

fn run(frames: &[(SystemTime, Vec<u8>)]) -> (Vec<ReplayItem>, ReplayStats) {
    let mut replayer = Replayer::new(DEFAULT_INTERVAL);
    let mut items = Vec::new();
    for (time, frame) in frames {
        replayer.frame(*time, frame, frame.len() as u32, &mut |item| items.push(item));
    }
    replayer.finish(&mut |item| items.push(item));
    (items, replayer.stats())
}

#[test]
fn replay_emits_one_flow_event_per_flow_with_syn_fingerprint() {
    let (items, stats) = run(&[(t(0), syn_frame()), (t(0), syn_frame())]);
    let flows: Vec<_> = items
        .iter()
        .filter_map(|item| match item {
            ReplayItem::Event(DatapathEvent::Flow(flow)) => Some(flow),
            _ => None,
        })
        .collect();
    assert_eq!(flows.len(), 1);
    assert_eq!(stats.flows, 1);
    let syn = flows[0].syn.expect("SYN fingerprint");
    assert_eq!((syn.window, syn.mss, syn.window_scale, syn.ttl), (14_600, 1460, 4, 64));
    assert_eq!(&syn.option_kinds[..syn.option_count as usize], &[2, 1, 3]);
    assert_eq!(flows[0].mac, Mac(DEVICE));
    assert_eq!(flows[0].dst_port, 443);
}

#[test]
fn replay_samples_ssdp_announcements_as_xdp_does_and_they_name_the_product() {
    let (items, _) = run(&[(t(0), ssdp_frame())]);
    let sample = items
        .iter()
        .find_map(|item| match item {
            ReplayItem::Event(DatapathEvent::Sample(sample)) => Some(sample),
            _ => None,
        })
        .expect("an SSDP sample");
    assert_eq!(sample.kind, SampleKind::Ssdp);
    match crate::fingerprint::sample::parse(sample).unwrap() {
        crate::fingerprint::sample::Parsed::Ssdp(message) => {
            assert_eq!(message.names, ["type:urn:belkin:device:insight:1", "usn:insight-1_0"])
        }
        other => panic!("expected SSDP, got {other:?}"),
    }
}

#[test]
fn replay_samples_dns_with_payload_offset() {
    let (items, _) = run(&[(t(0), dns_frame())]);
    let sample = items
        .iter()
        .find_map(|item| match item {
            ReplayItem::Event(DatapathEvent::Sample(sample)) => Some(sample),
            _ => None,
        })
        .expect("a DNS sample");
    assert_eq!(sample.kind, SampleKind::Dns);
    assert_eq!(sample.payload_offset, 28, "IPv4 (20) + UDP (8) headers");
    assert_eq!(sample.payload(), &[0xab; 30]);
}

#[test]
fn replay_samples_a_duplicate_address_probe_as_xdp_does_and_it_claims_the_tentative_address() {
    use std::net::Ipv6Addr;

    use crate::source_guard::claims;
    let tentative = Ipv6Addr::new(0xfd77, 0, 0, 0, 0x0217, 0x88ff, 0xfe24, 0x76ff);
    // RFC 4862 §5.4.2: from `::` to the tentative address's solicited-node group, hop limit 255.
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff24, 0x76ff);
    let icmp = etherparse::Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] };
    let builder = PacketBuilder::ethernet2(DEVICE, [0x33, 0x33, 0xff, 0x24, 0x76, 0xff])
        .ipv6(Ipv6Addr::UNSPECIFIED.octets(), group.octets(), 255)
        .icmpv6(icmp);
    let mut frame = Vec::new();
    builder.write(&mut frame, &tentative.octets()).unwrap();
    let (items, _) = run(&[(t(0), frame)]);
    let sample = items
        .iter()
        .find_map(|item| match item {
            ReplayItem::Event(DatapathEvent::Sample(sample)) => Some(sample),
            _ => None,
        })
        .expect("a neighbour-discovery sample");
    assert_eq!(sample.kind, SampleKind::Ndp);
    assert_eq!(sample.payload_offset, 44, "IPv6 (40) + ICMPv6 type, code and checksum (4)");
    let claimed = claims::from_sample(sample, &[], &[]);
    let expected = claims::Claim::Probes { mac: Mac(DEVICE), address: tentative.into() };
    assert!(claimed.contains(&expected), "{claimed:?}");
}

#[test]
fn replay_counts_tx_and_rx_per_interval() {
    let (items, _) = run(&[(t(0), dns_frame()), (t(0), syn_frame()), (t(2), dns_frame())]);
    let intervals: Vec<_> = items
        .iter()
        .filter_map(|item| match item {
            ReplayItem::Interval(interval) => Some(interval),
            _ => None,
        })
        .collect();
    assert_eq!(intervals.len(), 2);
    assert_eq!(intervals[0].start, t(0));
    let device = intervals[0].devices[&Mac(DEVICE)];
    assert_eq!(device.tx_packets, 2);
    assert_eq!(device.tx_bytes, (dns_frame().len() + syn_frame().len()) as u64);
    assert_eq!(intervals[0].devices[&Mac(ROUTER)].rx_packets, 2);
    assert_eq!(intervals[1].start, t(2));
    // The interval closes before the event of the next one comes out.
    let first_interval = items.iter().position(|i| matches!(i, ReplayItem::Interval(_))).unwrap();
    assert!(matches!(items[first_interval + 1], ReplayItem::Event(_)));
}

#[test]
fn replay_truncated_frames_are_counted_not_fatal() {
    let frame = syn_frame();
    let mut frames = Vec::new();
    for len in 0..frame.len() {
        frames.push((t(0), frame[..len].to_vec()));
    }
    let (_, stats) = run(&frames);
    assert_eq!(stats.frames, frame.len() as u64);
    assert!(stats.malformed > 0);
}

#[test]
fn replay_never_panics_on_any_shared_capture() {
    let root = crate::test_datasets::root();
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "pcap") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 400, "expected the whole dataset, found {} captures", files.len());
    let stats = replay_files(&files, DEFAULT_INTERVAL, |_, _| {}).unwrap();
    assert!(stats.iter().map(|s| s.flows).sum::<u64>() > 10_000);
}

#[test]
fn replay_refuses_a_file_that_is_not_pcap() {
    let error = CaptureReplay::new(&b"definitely not a capture file"[..], Path::new("x.pcap"), DEFAULT_INTERVAL);
    assert!(matches!(error, Err(ReplayError::Format { .. })));
}

/// A real capture rewritten as pcapng (nanosecond interface, as Wireshark writes on Linux)
/// replays into exactly the items and stats of the libpcap original.
#[test]
fn a_pcapng_copy_of_a_real_capture_replays_the_same() {
    use pcap_file::{
        pcap::PcapReader,
        pcapng::{
            Block, PcapNgWriter,
            blocks::{
                enhanced_packet::EnhancedPacketBlock,
                interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            },
        },
    };
    let original = crate::test_datasets::dataset("iot-sentinel").join("HueBridge/Setup-A-1-STA.pcap");
    let mut pcap = PcapReader::new(File::open(&original).unwrap()).unwrap();
    let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
    let interface = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0xffff,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    writer.write_block(&Block::InterfaceDescription(interface)).unwrap();
    while let Some(packet) = pcap.next_packet() {
        let packet = packet.unwrap();
        let copy = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: packet.timestamp,
            original_len: packet.orig_len,
            data: packet.data,
            options: vec![],
        };
        writer.write_block(&Block::EnhancedPacket(copy)).unwrap();
    }
    let pcapng = writer.into_inner();

    let interval = Duration::from_secs(10);
    let mut from_pcap = CaptureReplay::open(&original, interval).unwrap();
    let expected: Vec<ReplayItem> = from_pcap.by_ref().collect();
    let mut from_pcapng = CaptureReplay::new(std::io::Cursor::new(pcapng), Path::new("copy.pcapng"), interval).unwrap();
    let items: Vec<ReplayItem> = from_pcapng.by_ref().collect();
    assert!(from_pcap.stats().frames > 100, "{:?}", from_pcap.stats());
    assert_eq!(from_pcapng.stats(), from_pcap.stats());
    assert!(items == expected, "the pcapng copy replays into the same items");
}

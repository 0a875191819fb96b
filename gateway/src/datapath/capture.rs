//! Reads capture files, libpcap or pcapng (both with `pcap-file`), as Ethernet frames with
//! their capture times, for `replay`. The format is told by the file's first four bytes.
//!
//! pcapng needs two things the crate leaves to its caller: each packet's link type is its
//! interface's (frames of interfaces that are not Ethernet are skipped and counted), and its
//! timestamp is a count of the interface's time units (`if_tsresol`, microseconds unless the
//! interface says otherwise), which `pcap-file` 2.0 returns as if they were nanoseconds.
use std::{
    io::{Chain, Cursor, Read},
    path::Path,
    time::{Duration, SystemTime},
};

use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{
        Block, PcapNgReader,
        blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
    },
};

use super::replay::ReplayError;

/// The first bytes of a pcapng file (its Section Header Block's type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// pcapng's time unit when an interface names none: 10^-6 s.
const DEFAULT_TSRESOL: u8 = 6;

/// One captured Ethernet frame.
#[derive(Debug)]
pub struct Frame {
    pub time: SystemTime,
    pub data: Vec<u8>,
    /// Length on the wire (the capture may hold fewer bytes).
    pub wire_len: u32,
}

/// What reading the next frame ran into.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// A pcapng packet of an interface whose link type is not Ethernet, or one without an
    /// interface or a time (a Simple Packet Block).
    Skipped,
    /// A damaged record: reading stops here.
    Damaged(PcapError),
}

type Source<R> = Chain<Cursor<[u8; 4]>, R>;

/// A capture file being read.
pub enum CaptureReader<R: Read> {
    Pcap(PcapReader<Source<R>>),
    PcapNg(PcapNgReader<Source<R>>),
}

impl<R: Read> CaptureReader<R> {
    /// Reads the header of a libpcap or pcapng stream; `path` only names it in errors. A
    /// libpcap file must be Ethernet; a pcapng file's link types are per interface.
    pub fn new(mut reader: R, path: &Path) -> Result<Self, ReplayError> {
        let mut magic = [0u8; 4];
        reader.read_exact(&mut magic).map_err(|source| ReplayError::Open { path: path.to_owned(), source })?;
        let source = Cursor::new(magic).chain(reader);
        let format = |source| ReplayError::Format { path: path.to_owned(), source };
        if magic == PCAPNG_MAGIC {
            return Ok(Self::PcapNg(PcapNgReader::new(source).map_err(format)?));
        }
        let reader = PcapReader::new(source).map_err(format)?;
        let datalink = reader.header().datalink;
        if datalink != DataLink::ETHERNET {
            return Err(ReplayError::LinkType { path: path.to_owned(), datalink });
        }
        Ok(Self::Pcap(reader))
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Option<Next> {
        match self {
            Self::Pcap(reader) => Some(match reader.next_packet()? {
                Ok(packet) => Next::Frame(Frame {
                    time: SystemTime::UNIX_EPOCH + packet.timestamp,
                    data: packet.data.into_owned(),
                    wire_len: packet.orig_len,
                }),
                Err(error) => Next::Damaged(error),
            }),
            Self::PcapNg(reader) => loop {
                let packet = match reader.next_block()? {
                    Ok(Block::EnhancedPacket(packet)) => packet.into_owned(),
                    Ok(Block::SimplePacket(_)) => return Some(Next::Skipped),
                    Ok(_) => continue,
                    Err(error) => return Some(Next::Damaged(error)),
                };
                let Some(interface) = reader.packet_interface(&packet) else { return Some(Next::Skipped) };
                if interface.linktype != DataLink::ETHERNET {
                    return Some(Next::Skipped);
                }
                // The crate reads the raw 64-bit count as nanoseconds: take the count back.
                let units = u64::try_from(packet.timestamp.as_nanos()).unwrap_or(u64::MAX);
                // A count of whole seconds can pass the end of time: a damaged record.
                let Some(time) = SystemTime::UNIX_EPOCH.checked_add(since_epoch(units, time_unit(interface))) else {
                    return Some(Next::Damaged(PcapError::InvalidField("packet time out of range")));
                };
                return Some(Next::Frame(Frame {
                    time,
                    data: packet.data.into_owned(),
                    wire_len: packet.original_len,
                }));
            },
        }
    }
}

/// An interface's `if_tsresol`: 10^-n s, or 2^-n s when the top bit is set.
fn time_unit(interface: &InterfaceDescriptionBlock) -> u8 {
    interface
        .options
        .iter()
        .find_map(|option| match option {
            InterfaceDescriptionOption::IfTsResol(resolution) => Some(*resolution),
            _ => None,
        })
        .unwrap_or(DEFAULT_TSRESOL)
}

/// `units` of the time unit `tsresol` as a duration: 10^-n s, or 2^-n s with the top bit set.
fn since_epoch(units: u64, tsresol: u8) -> Duration {
    let base: u128 = if tsresol & 0x80 != 0 { 2 } else { 10 };
    let per_second = base.checked_pow(u32::from(tsresol & 0x7f)).unwrap_or(u128::MAX);
    let units = u128::from(units);
    let nanos = (units % per_second) * 1_000_000_000 / per_second;
    Duration::new(u64::try_from(units / per_second).unwrap_or(u64::MAX), nanos as u32)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use pcap_file::{
        Endianness,
        pcapng::{
            PcapNgWriter,
            blocks::{enhanced_packet::EnhancedPacketBlock, section_header::SectionHeaderBlock},
        },
    };

    use super::*;

    fn interface(linktype: DataLink, tsresol: Option<u8>) -> Block<'static> {
        let options = tsresol.map(InterfaceDescriptionOption::IfTsResol).into_iter().collect();
        Block::InterfaceDescription(InterfaceDescriptionBlock { linktype, snaplen: 0xffff, options })
    }

    fn packet(interface_id: u32, units: u64, data: &[u8]) -> Block<'static> {
        Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id,
            // Written back as the raw count, as the crate reads it.
            timestamp: Duration::from_nanos(units),
            original_len: data.len() as u32 + 10,
            data: Cow::Owned(data.to_vec()),
            options: vec![],
        })
    }

    fn pcapng(blocks: &[Block<'static>]) -> Vec<u8> {
        let section = SectionHeaderBlock { endianness: Endianness::Big, ..Default::default() };
        let mut writer = PcapNgWriter::with_section_header(Vec::new(), section).unwrap();
        for block in blocks {
            writer.write_block(block).unwrap();
        }
        writer.into_inner()
    }

    fn read_all(bytes: Vec<u8>) -> Vec<Next> {
        let mut reader = CaptureReader::new(Cursor::new(bytes), Path::new("test.pcapng")).expect("a capture");
        std::iter::from_fn(|| reader.next_frame()).collect()
    }

    #[test]
    fn pcapng_frames_keep_their_times_in_each_interfaces_unit_and_other_links_are_skipped() {
        let bytes = pcapng(&[
            interface(DataLink::ETHERNET, None),
            interface(DataLink::ETHERNET, Some(9)),
            interface(DataLink::LINUX_SLL, None),
            packet(0, 1_700_000_000_123_456, b"micro"),
            packet(1, 1_700_000_000_123_456_789, b"nano"),
            packet(2, 1, b"cooked"),
        ]);
        let read = read_all(bytes);
        assert_eq!(read.len(), 3, "{read:?}");
        let Next::Frame(micro) = &read[0] else { panic!("{read:?}") };
        assert_eq!(micro.time, SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000));
        assert_eq!((micro.data.as_slice(), micro.wire_len), (&b"micro"[..], 15));
        let Next::Frame(nano) = &read[1] else { panic!("{read:?}") };
        assert_eq!(nano.time, SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
        assert!(matches!(read[2], Next::Skipped), "a Linux cooked frame is not replayed as Ethernet");
    }

    #[test]
    fn a_time_past_the_end_of_time_is_a_damaged_record_not_a_panic() {
        // Found by the `capture` fuzz target: seconds as the unit and the largest count.
        let bytes = pcapng(&[interface(DataLink::ETHERNET, Some(0)), packet(0, u64::MAX, b"late")]);
        let read = read_all(bytes);
        assert!(matches!(read.as_slice(), [Next::Damaged(_)]), "{read:?}");
    }

    #[test]
    fn binary_time_units_are_fractions_of_two() {
        assert_eq!(since_epoch(3 * 1024 + 512, 0x80 | 10), Duration::new(3, 500_000_000));
        assert_eq!(since_epoch(42, 0), Duration::from_secs(42));
    }

    #[test]
    fn neither_format_is_refused_with_the_readers_reason() {
        let refused = CaptureReader::new(Cursor::new(b"not a capture at all".to_vec()), Path::new("x"));
        assert!(matches!(refused, Err(ReplayError::Format { .. })));
        let short = CaptureReader::new(Cursor::new(vec![0x0a]), Path::new("x"));
        assert!(matches!(short, Err(ReplayError::Open { .. })));
    }
}

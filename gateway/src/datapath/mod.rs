//! The XDP datapath seen from userspace: `loader` loads and attaches the programs and pins
//! the maps, `events` decodes the ring buffer, `maps` is the only writer of BPF maps.

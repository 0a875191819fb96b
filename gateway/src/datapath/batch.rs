//! Reads a whole BPF map with `BPF_MAP_LOOKUP_BATCH`, and writes or deletes many entries with
//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (aya 0.14 has no batch operations): one
//! `bpf(2)` call per `CHUNK` entries instead of one or two per entry. The counter sweep reads
//! the per-device counters this way every quarter second, the metrics read the flow table's
//! fill, and a policy sync reads and rewrites the policy tries (10,000 rules changed in a few
//! calls, bench/scale).
//!
//! The gateway crate's only `unsafe` (allowed for this module alone, see `lib.rs`), audited:
//! the `libc::syscall` below passes the kernel an attribute struct laid out as the kernel's
//! `bpf_attr.batch` and buffers the functions here own. A read's are sized for `CHUNK` keys
//! and `CHUNK` values (each value `copies` times: one per possible CPU for per-CPU maps); the
//! kernel writes at most `count` entries into them and says how many it wrote. Decoding the
//! bytes afterwards is safe code (`gateway_ebpf::FromBytes`). A write's hold `count` keys and
//! values copied from the ABI's `Pod` types, which have no implicit padding (gateway-ebpf
//! checks their sizes at compile time), so every byte the kernel reads is initialised.
#![allow(unsafe_code)]

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;
use gateway_ebpf::FromBytes;

/// Entries asked for per call. A hash map hands out whole buckets, so a chunk must hold the
/// largest bucket (`ENOSPC` otherwise): a few thousand is far above any real bucket.
const CHUNK: u32 = 4_096;

/// `BPF_MAP_LOOKUP_BATCH` (`enum bpf_cmd` in `linux/bpf.h`, since Linux 5.6).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH` (same enum; LPM tries take them through the
/// kernel's generic batch functions since Linux 5.14).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `bpf_attr.batch` (`linux/bpf.h`).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Bytes of the kernel's resume token: a hash map's is a bucket number (`u32`); room to spare.
const TOKEN_BYTES: usize = 64;

/// Calls `visit` with every entry of the hash map `map` whose keys are `K` and whose values
/// are `copies` `V`s (1 for a plain map, the number of possible CPUs for a per-CPU map, each
/// copy padded to 8 bytes as the kernel lays them out). Nothing is allocated per entry: a
/// sweep of a hundred thousand devices costs the kernel's copy and `visit`, little more.
pub fn for_each<K: FromBytes, V: FromBytes>(
    map: &MapData,
    copies: usize,
    mut visit: impl FnMut(K, &[V]),
) -> std::io::Result<()> {
    let value_stride = size_of::<V>().next_multiple_of(8);
    let mut per_copy = Vec::with_capacity(copies);
    for_each_chunk(map, size_of::<K>(), value_stride * copies, |keys, values| {
        for (key, own) in keys.chunks_exact(size_of::<K>()).zip(values.chunks_exact(value_stride * copies)) {
            per_copy.clear();
            for value in own.chunks_exact(value_stride) {
                per_copy.push(V::from_bytes(value).ok_or_else(short)?);
            }
            visit(K::from_bytes(key).ok_or_else(short)?, &per_copy);
        }
        Ok(())
    })
}

/// The `count` elements of the array map `map` (values `V`, the map's own size) from index
/// `first` on, in one `BPF_MAP_LOOKUP_BATCH` call: the kernel's resume token of an array is
/// the index before the next (none for index 0). Fewer when the array ends before.
pub fn read_range<V: FromBytes>(map: &MapData, first: u32, count: u32) -> std::io::Result<Vec<V>> {
    let value_size = size_of::<V>().next_multiple_of(8);
    let mut keys = vec![0u8; size_of::<u32>() * count as usize];
    let mut values = vec![0u8; value_size * count as usize];
    let (before, mut token_out) = (first.wrapping_sub(1).to_ne_bytes(), [0u8; TOKEN_BYTES]);
    let mut attr = BatchAttr {
        in_batch: if first == 0 { 0 } else { before.as_ptr() as u64 },
        out_batch: token_out.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: as in `for_each_chunk`: `keys` and `values` hold `count` keys (an array's are
    // `u32`) and values of this map's size, `before` an array's token (`u32`), `token_out` room
    // for one; all owned here and alive across the call.
    match unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
        // ENOENT: the array ended, with `count` elements still filled.
        Err(error) if error.raw_os_error() != Some(libc::ENOENT) => return Err(error),
        _ => {}
    }
    let filled = (attr.count.min(count)) as usize;
    values[..filled * value_size].chunks_exact(value_size).map(|value| V::from_bytes(value).ok_or_else(short)).collect()
}

/// How many entries the hash map `map` holds, read in chunks and dropped (nothing is kept,
/// so counting a million flows needs one chunk of memory).
pub fn count(map: &MapData) -> std::io::Result<usize> {
    let info = map.info().map_err(std::io::Error::other)?;
    let copies = if is_per_cpu(&info) { aya::util::nr_cpus().map_err(|(_, e)| e)? } else { 1 };
    let entry_values = (info.value_size() as usize).next_multiple_of(8) * copies;
    let mut entries = 0;
    for_each_chunk(map, info.key_size() as usize, entry_values, |keys, _| {
        entries += keys.len() / (info.key_size() as usize).max(1);
        Ok(())
    })?;
    Ok(entries)
}

fn is_per_cpu(info: &aya::maps::MapInfo) -> bool {
    use aya::maps::MapType as T;
    matches!(info.map_type(), Ok(T::PerCpuHash | T::LruPerCpuHash | T::PerCpuArray))
}

/// Calls `chunk` with the keys and values of each batch the kernel returns, `key_size` and
/// `entry_values` bytes an entry, until the map is read to its end.
fn for_each_chunk(
    map: &MapData,
    key_size: usize,
    entry_values: usize,
    mut chunk: impl FnMut(&[u8], &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut keys = vec![0u8; key_size * CHUNK as usize];
    let mut values = vec![0u8; entry_values * CHUNK as usize];
    let (mut token_in, mut token_out) = ([0u8; TOKEN_BYTES], [0u8; TOKEN_BYTES]);
    let fd = map.fd().as_fd().as_raw_fd();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is `bpf_attr.batch` of the kernel's ABI (stable since 5.6); every
        // pointer in it is to a buffer owned here and alive across the call: `keys` and
        // `values` hold `CHUNK` entries of this map's key size and `entry_values` bytes of
        // values, the tokens a hash map's bucket number. The kernel writes nothing else.
        let done = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as libc::c_uint)
        };
        // ENOENT: the last chunk (possibly empty), with `count` entries still filled.
        let error = (done < 0).then(std::io::Error::last_os_error);
        let last = error.as_ref().is_some_and(|e| e.raw_os_error() == Some(libc::ENOENT));
        if let Some(error) = error.filter(|_| !last) {
            return Err(error);
        }
        let filled = (attr.count as usize).min(CHUNK as usize);
        chunk(&keys[..filled * key_size], &values[..filled * entry_values])?;
        if last {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}

/// A batch write that stopped part-way: the kernel wrote (or deleted) the first `done`
/// entries, in order, then failed with `error`.
#[derive(Debug)]
pub struct Partial {
    pub done: usize,
    pub error: std::io::Error,
}

impl Partial {
    /// The kernel has no batch writes for this map (a kernel before 5.14 for an LPM trie):
    /// nothing was written, the caller writes entry by entry.
    pub fn unsupported(&self) -> bool {
        // ENOTSUPP (524) is the kernel's own code for a missing map operation.
        self.done == 0 && matches!(self.error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | 524))
    }
}

/// Writes `entries` into `map` (keys `K`, values `V`, the map's own sizes) in their order, with
/// one `BPF_MAP_UPDATE_BATCH` call per `CHUNK`: each entry replaces or adds one, as a single
/// update would, so a reader sees every entry either as it was or as written.
pub fn update<K: aya::Pod, V: aya::Pod>(map: &MapData, entries: &[(K, V)]) -> Result<(), Partial> {
    update_with(map, entries, 0)
}

/// `update` with the single update's `flags` applied to each entry (`BPF_NOEXIST`: a key the
/// map holds stops the batch with `EEXIST`, the entries before it written).
pub fn update_with<K: aya::Pod, V: aya::Pod>(map: &MapData, entries: &[(K, V)], flags: u64) -> Result<(), Partial> {
    let mut done = 0;
    for chunk in entries.chunks(CHUNK as usize) {
        let mut keys = Vec::with_capacity(chunk.len() * size_of::<K>());
        let mut values = Vec::with_capacity(chunk.len() * size_of::<V>());
        for (key, value) in chunk {
            keys.extend_from_slice(bytes_of(key));
            values.extend_from_slice(bytes_of(value));
        }
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            elem_flags: flags,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is `bpf_attr.batch` of the kernel's ABI; `keys` and `values` hold
        // `count` keys and values of the map's sizes (`K` and `V` are its types), alive
        // across the call, which only reads them (and writes `attr.count`).
        let written = unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) };
        if let Err(error) = written {
            return Err(Partial { done: done + (attr.count as usize).min(chunk.len()), error });
        }
        done += chunk.len();
    }
    Ok(())
}

/// Deletes `keys` from `map` in their order, one `BPF_MAP_DELETE_BATCH` call per `CHUNK`. A
/// key the map does not hold stops the batch (`ENOENT`), as a single delete would fail.
pub fn delete<K: aya::Pod>(map: &MapData, keys: &[K]) -> Result<(), Partial> {
    let mut done = 0;
    for chunk in keys.chunks(CHUNK as usize) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|key| bytes_of(key).iter().copied()).collect();
        let mut attr = BatchAttr {
            keys: bytes.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: as in `update`, with keys only: the kernel reads `count` keys of the map's
        // key size from `bytes`.
        let deleted = unsafe { bpf(BPF_MAP_DELETE_BATCH, &mut attr) };
        if let Err(error) = deleted {
            return Err(Partial { done: done + (attr.count as usize).min(chunk.len()), error });
        }
        done += chunk.len();
    }
    Ok(())
}

/// The bytes of an ABI value.
fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: `T: Pod` is plain integers and byte arrays, `repr(C)` with explicit padding
    // fields (the ABI's rule, sizes checked at compile time in gateway-ebpf), so all
    // `size_of::<T>()` bytes behind the reference are initialised and live as long as it.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

/// One `bpf(2)` batch command on `attr`.
///
/// # Safety
/// Every pointer in `attr` must be valid for what `command` reads and writes (see callers).
unsafe fn bpf(command: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller's promise; `attr` itself is a live `bpf_attr.batch`.
    let done = unsafe {
        libc::syscall(libc::SYS_bpf, command, std::ptr::from_mut(attr), size_of::<BatchAttr>() as libc::c_uint)
    };
    if done < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn short() -> std::io::Error {
    std::io::Error::other("batch lookup returned a short entry")
}

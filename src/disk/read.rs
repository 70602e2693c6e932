//! The disk tier's read side: index → location → the record's bytes from
//! the active buffer, a frozen buffer or the segment file, checked in that
//! order (data only moves in that direction, and is published in the next
//! place before it leaves the previous one). Every record is verified and
//! its key compared in full before a byte is returned; a record that fails
//! is a miss, dropped from the index and counted.

use super::DiskTier;
use super::compression;
use super::image::{Copied, Image};
use super::index::{Loc, PENDING};
use super::mapped::{Faulted, Map};
use super::maps::{Mapped, ReadPath};
use super::segment::SegmentFile;
use super::state::add;
use crate::format::FormatError;
use crate::format::record::{self, Kind, RECORD_HEADER_LEN};
use crate::format::segment::{
    SEGMENT_HEADER_LEN, SUMMARY_ENTRY_LEN, SummaryEntry, TRAILER_LEN, Trailer,
};
use crate::key::hash_key;
use crate::sync::{Arc, Ordering};
use bytes::Bytes;

/// Names the record a [`DiskTier::get_current`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token(Loc);

impl Token {
    /// Whether the token names the record at `loc`.
    pub(crate) fn is(self, loc: Loc) -> bool {
        self.0 == loc
    }

    pub(crate) fn loc(self) -> Loc {
        self.0
    }
}

/// The record the index held for a key before a write or a removal
/// superseded it: what the removal listener is told left.
pub(crate) struct Prior {
    /// The record's own key (another key's, if the two share a hash).
    pub(crate) key: Vec<u8>,
    pub(crate) value: Bytes,
    /// Unix ns; 0 = never.
    pub(crate) expires_at: u64,
    pub(crate) token: Token,
}

/// Which record a lookup wants.
#[derive(Clone, Copy)]
enum Lookup<'a> {
    /// This key's.
    Key(&'a [u8]),
    /// Whichever key's hashes to the hash looked up.
    Hash,
    /// Whatever the index holds for the hash, which a write of this key
    /// supersedes.
    Prior(&'a [u8]),
}

/// How a lookup treats the record's use count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A read for the caller (an L2 hit): counts a use and a hit.
    Hit,
    /// A look without consequence (`contains`, the warm refill).
    Peek,
}

impl DiskTier {
    /// The value of `key`, if the tier holds a live, intact record of it.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8], now_unix_ns: u64) -> Option<Bytes> {
        let hash = crate::key::hash_key(key);
        self.get_current(key, hash, now_unix_ns).map(|(v, _, _)| v)
    }

    /// Waits (yielding, up to a second) while the key of `hash` is
    /// reserved for a demotion: its record is being compressed and appended
    /// by the thread that demoted it, which never waits itself, so this
    /// lasts a compression at most.
    pub(crate) fn wait_unreserved(&self, hash: u64) {
        let start = std::time::Instant::now();
        while self.shared.index.peek(hash) == Some(PENDING)
            && start.elapsed() < std::time::Duration::from_secs(1)
        {
            std::thread::yield_now();
        }
    }

    /// Where the index points the key of `hash` now ([`PENDING`] included).
    pub(crate) fn current_loc(&self, hash: u64) -> Option<Loc> {
        self.shared.index.peek(hash)
    }

    /// The record the index holds for `hash`, live or past its deadline, of
    /// `key` or of another key with the same hash, counting nothing: what a
    /// write or removal of `key` would supersede. A corrupt record is
    /// dropped and reported as `key`'s.
    pub(crate) fn read_prior(&self, key: &[u8], hash: u64) -> Option<Prior> {
        let ((key, value), expires_at, token) =
            self.look(Lookup::Prior(key), hash, 0, Access::Peek)?;
        Some(Prior {
            key,
            value,
            expires_at,
            token,
        })
    }

    /// Whether the index still points the key of `hash` at the record `token`
    /// names (no overwrite or removal since it was read).
    #[cfg(test)]
    pub(crate) fn is_current(&self, hash: u64, token: Token) -> bool {
        self.shared.index.peek(hash) == Some(token.0)
    }

    /// The value of `key` (of `hash`) if the tier holds a live, intact record
    /// of it, with the record's expiry (unix ns) and a token for
    /// [`is_current`](Self::is_current). Counts an L2 hit and a use.
    pub(crate) fn get_current(
        &self,
        key: &[u8],
        hash: u64,
        now_unix_ns: u64,
    ) -> Option<(Bytes, u64, Token)> {
        let (v, expires_at, token) = self.look(Lookup::Key(key), hash, now_unix_ns, Access::Hit)?;
        add(&self.shared.counters.hits, 1);
        Some((v.1, expires_at, token))
    }

    /// Whether the tier holds a live, intact record of `key` (of `hash`):
    /// one read of the record, counting nothing.
    pub(crate) fn contains(&self, key: &[u8], hash: u64, now_unix_ns: u64) -> bool {
        self.look(Lookup::Key(key), hash, now_unix_ns, Access::Peek)
            .is_some()
    }

    /// The hash of every key whose record is in index stripe `stripe` (of
    /// [`INDEX_STRIPES`](super::INDEX_STRIPES)).
    pub(crate) fn key_hashes(&self, stripe: usize, out: &mut Vec<u64>) {
        self.shared.index.hashes_of(stripe, out);
    }

    /// Keys with a record that the memory tier does not hold (as far as the
    /// index's flags know): one pass over the index.
    pub(crate) fn keys_outside_memory(&self) -> usize {
        self.shared.index.outside_memory()
    }

    /// Reads the record the index holds for `hash` without counting a use or a
    /// hit (for refilling memory): its key, value, expiry (unix ns) and token.
    pub(crate) fn read_by_hash(
        &self,
        hash: u64,
        now_unix_ns: u64,
    ) -> Option<(Vec<u8>, Bytes, u64, Token)> {
        let ((key, value), expires_at, token) =
            self.look(Lookup::Hash, hash, now_unix_ns, Access::Peek)?;
        Some((key, value, expires_at, token))
    }

    /// The live value the index holds for `hash` (at `now_unix_ns` 0, past
    /// its deadline too), read and verified, if the record is the one
    /// `lookup` asks for. A record that fails its checks is a miss, counted,
    /// dropped from the index and reported (where the key is known); a
    /// location whose segment reclaim took is a miss, which reclaim itself
    /// drops from the index.
    #[allow(clippy::type_complexity)]
    fn look(
        &self,
        lookup: Lookup<'_>,
        hash: u64,
        now_unix_ns: u64,
        access: Access,
    ) -> Option<((Vec<u8>, Bytes), u64, Token)> {
        let sh = &*self.shared;
        if sh.closed.load(Ordering::Acquire) {
            return None; // another cache may own the directory now
        }
        let loc = match access {
            Access::Hit => sh.index.get(hash)?,
            Access::Peek => sh.index.peek(hash)?,
        };
        if loc == PENDING {
            return None; // a demotion on its way: not readable yet
        }
        // None: its segment was reclaimed since the index was read, a plain
        // miss (reclaim drops the entry, and reports it).
        let bytes = self.read(loc)?;
        let found = bytes.and_then(|bytes| {
            let bytes = Bytes::from(bytes);
            let r = record::decode(u64::from(loc.segment), loc.offset, &bytes)?;
            let expires_at = r.header.expires_at;
            let live = expires_at == 0 || expires_at > now_unix_ns;
            let ours = match lookup {
                Lookup::Key(k) => r.key == k,
                Lookup::Hash => hash_key(r.key) == hash,
                Lookup::Prior(_) => true,
            };
            if !ours || !live {
                return Ok(None);
            }
            Ok(value_of(&r, &bytes)?.map(|v| ((r.key.to_vec(), v), expires_at)))
        });
        match found {
            Ok(Some((v, expires_at))) => Some((v, expires_at, Token(loc))),
            Ok(None) => None,
            Err(e) => {
                // Corrupt, torn or truncated: a miss, counted, and forgotten.
                add(&sh.counters.corrupt_records, 1);
                let dropped = sh.index.remove_if(hash, loc);
                log_corruption(loc, &e);
                if let (true, Some(n), Lookup::Key(k) | Lookup::Prior(k)) =
                    (dropped, &sh.config.removals, lookup)
                {
                    n.send(k, None, crate::listener::RemovalCause::Corrupt);
                }
                None
            }
        }
    }

    /// The bytes of the record at `loc`, from wherever they are now; `None` if
    /// its segment has been reclaimed. The record's length comes from its
    /// header (the index does not keep it); a header that fails its checks, or
    /// a file too short for the record (truncated behind larder's back), is
    /// damage, reported as `Some(Err(..))`.
    fn read(&self, loc: Loc) -> Option<Result<Vec<u8>, FormatError>> {
        let sh = &*self.shared;
        let image = {
            let actives = sh.active.read();
            let active = actives.iter().find(|a| a.id == loc.segment);
            active.map(|a| Arc::clone(&a.image))
        };
        let image = image.or_else(|| {
            let frozen = sh.frozen.read();
            frozen.get(&loc.segment).map(|f| Arc::clone(&f.image))
        });
        if let Some(image) = image {
            return Some(self.read_image(&image, loc.offset));
        }
        let file = sh.files.read().get(&loc.segment).cloned()?;
        let size = sh.config.segment_size as usize;
        let records_end = size - TRAILER_LEN;
        if sh.config.read_path == ReadPath::Mmap {
            let read = |map: &Map| {
                if !map.seen(loc.offset as usize, READ_AHEAD) {
                    return Ok(None); // maybe cold: one `pread` (see `Map::seen`)
                }
                read_map(map, loc.offset, records_end).map(Some)
            };
            match sh.maps.read(&file, size, read) {
                Mapped::Read(Some(bytes)) => return Some(bytes),
                Mapped::Read(None) | Mapped::Unmapped => {}
                Mapped::Failed { first: true } => {
                    self.drop_faulted(&file);
                    return Some(Err(FormatError::Truncated {
                        needed: RECORD_HEADER_LEN,
                        available: 0,
                    }));
                }
                // Found out by an earlier read, which dropped its keys.
                Mapped::Failed { first: false } => return None,
            }
        }
        Some(self.read_file(&file, loc.offset, records_end))
    }

    /// Drops a segment whose map faulted (its file was truncated or cannot
    /// be read) from the index: its keys are misses from now on. The file
    /// stays listed until reclaim reaches it, as a damaged segment, so the
    /// next open treats it as such (and older records of its keys cannot
    /// come back).
    fn drop_faulted(&self, file: &SegmentFile) {
        let sh = &*self.shared;
        let keys = sh.index.remove_segment(file.id);
        add(&sh.counters.faulted_segments, 1);
        log::warn!(
            "segment {} faulted under its map (truncated or unreadable): {keys} keys dropped",
            file.id
        );
    }

    /// The record at `offset` of a segment not sealed yet: from its image, or
    /// from its file if the image has let go of those bytes.
    fn read_image(&self, image: &Image, offset: u32) -> Result<Vec<u8>, FormatError> {
        let start = offset as usize;
        let len = image.len();
        if start < SEGMENT_HEADER_LEN || start >= len {
            return Err(FormatError::Truncated {
                needed: RECORD_HEADER_LEN,
                available: 0,
            });
        }
        let copy = |n| match image.copy(start, n) {
            Copied::Bytes(bytes) => Ok(bytes),
            Copied::OnFile { file, end } => self.read_file(&file, offset, end),
        };
        let bytes = copy(READ_AHEAD.min(len - start))?;
        let need = record::decode_header(&bytes)?.record_len();
        match need {
            _ if need <= bytes.len() => record_at_start(Some(&bytes)),
            // Published whole: a record longer than the bytes after it is damage.
            _ if need > len - start => Err(FormatError::Truncated {
                needed: need,
                available: len - start,
            }),
            _ => record_at_start(Some(&copy(need)?)),
        }
    }

    /// The record at `offset` of a segment file whose records end by
    /// `records_end`: one read of up to [`READ_AHEAD`] bytes learns its length
    /// and, for most records, gets all of it; a longer record takes a second
    /// read.
    fn read_file(
        &self,
        file: &SegmentFile,
        offset: u32,
        records_end: usize,
    ) -> Result<Vec<u8>, FormatError> {
        let io = &*self.shared.config.io;
        let ahead = READ_AHEAD.min(records_end.saturating_sub(offset as usize));
        let short = |needed| FormatError::Truncated {
            needed,
            available: 0,
        };
        if ahead < RECORD_HEADER_LEN {
            return Err(short(RECORD_HEADER_LEN));
        }
        let mut buf = vec![0u8; ahead];
        io.read_exact_at(&file.file, &mut buf, u64::from(offset))
            .map_err(|_| short(ahead))?;
        let len = record::decode_header(&buf)?.record_len();
        if len <= ahead {
            buf.truncate(len);
            // The value may share this buffer: give back what it does not use.
            buf.shrink_to_fit();
        } else {
            buf.resize(len, 0);
            io.read_exact_at(
                &file.file,
                &mut buf[ahead..],
                u64::from(offset) + ahead as u64,
            )
            .map_err(|_| short(len))?;
        }
        Ok(buf)
    }
}

/// The record at `offset` of a mapped segment whose records end by
/// `records_end`, copied out of the map: its header first (to learn its
/// length), then the whole record into a buffer of exactly its size.
fn read_map(
    map: &Map,
    offset: u32,
    records_end: usize,
) -> Result<Result<Vec<u8>, FormatError>, Faulted> {
    let start = offset as usize;
    let short = |needed| FormatError::Truncated {
        needed,
        available: records_end.saturating_sub(start),
    };
    if start + RECORD_HEADER_LEN > records_end {
        return Ok(Err(short(RECORD_HEADER_LEN)));
    }
    let mut header = [0u8; RECORD_HEADER_LEN];
    map.copy_to(start, &mut header)?;
    let len = match record::decode_header(&header) {
        Ok(h) => h.record_len(),
        Err(e) => return Ok(Err(e)),
    };
    if start + len > records_end {
        return Ok(Err(short(len)));
    }
    Ok(Ok(map.to_vec(start, len)?))
}

/// Bytes read ahead of a record in a segment file (see `DiskTier::read_file`):
/// a 4 KiB value with its header and a key of up to ~470 bytes takes one read.
/// (8 KiB measured 0.4 µs slower at the median for 4 KiB values.)
pub(crate) const READ_AHEAD: usize = 4608;

/// A copy of the record `bytes` start with (they may run on past it).
fn record_at_start(bytes: Option<&[u8]>) -> Result<Vec<u8>, FormatError> {
    let bytes = bytes.ok_or(FormatError::Truncated {
        needed: RECORD_HEADER_LEN,
        available: 0,
    })?;
    let len = record::decode_header(bytes)?.record_len();
    bytes
        .get(..len)
        .map(<[u8]>::to_vec)
        .ok_or(FormatError::Truncated {
            needed: len,
            available: bytes.len(),
        })
}

/// The value of a verified record decoded from `bytes`: `None` for a
/// tombstone or a mark. A value stored raw shares `bytes` (no copy).
fn value_of(r: &record::Record<'_>, bytes: &Bytes) -> Result<Option<Bytes>, FormatError> {
    if r.header.kind != Kind::Value {
        return Ok(None);
    }
    if !r.header.compressed {
        // Sharing the record's buffer saves a copy; it holds the header and
        // key too, so small values (over a quarter overhead) are copied.
        return Ok(Some(if r.stored.len() * 4 >= bytes.len() * 3 {
            bytes.slice_ref(r.stored)
        } else {
            Bytes::copy_from_slice(r.stored)
        }));
    }
    let raw = compression::decompress(r.stored, r.header.raw_len as usize)
        .filter(|v| v.len() == r.header.raw_len as usize)
        .ok_or(FormatError::Invalid {
            what: "record",
            field: "compressed value",
            value: u64::from(r.header.stored_len),
        })?;
    Ok(Some(Bytes::from(raw)))
}

pub(crate) fn log_corruption(loc: Loc, e: &FormatError) {
    // One line per bad record; the counter in `stats` is the durable signal.
    log::warn!(
        "corrupt record in segment {} at offset {} dropped: {e}",
        loc.segment,
        loc.offset
    );
}

/// Tells the removal listener of a record reclaim dropped: its key and
/// value, read back from the (unlinked, still open) file; `Expired` if its
/// deadline had passed, else `Reclaimed`. A record that cannot be read or
/// fails its checks is counted; its key is unknown, so it is not reported.
pub(super) fn report_dropped(
    sh: &super::state::DiskState,
    n: &crate::listener::Notifier,
    file: &SegmentFile,
    loc: Loc,
    now: u64,
) {
    let io = &*sh.config.io;
    let mut header = [0u8; RECORD_HEADER_LEN];
    let at = u64::from(loc.offset);
    let read = io
        .read_exact_at(&file.file, &mut header, at)
        .ok()
        .and_then(|()| {
            let len = record::decode_header(&header).ok()?.record_len();
            let mut bytes = vec![0u8; len];
            io.read_exact_at(&file.file, &mut bytes, at).ok()?;
            Some(bytes)
        });
    let Some(bytes) = read.map(Bytes::from) else {
        add(&sh.counters.corrupt_records, 1);
        return;
    };
    match record::decode(u64::from(loc.segment), loc.offset, &bytes) {
        Ok(r) => {
            let expired = r.header.expires_at != 0 && r.header.expires_at <= now;
            let cause = if expired {
                crate::listener::RemovalCause::Expired
            } else {
                crate::listener::RemovalCause::Reclaimed
            };
            let value = value_of(&r, &bytes).ok().flatten();
            n.send(r.key, value, cause);
        }
        Err(e) => {
            add(&sh.counters.corrupt_records, 1);
            log_corruption(loc, &e);
        }
    }
}

/// A sealed segment's summary, read back from its file.
/// Reads only the trailer and the summary, into a zeroed segment-sized buffer
/// (the allocator maps zero pages lazily, so the rest costs nothing).
pub(super) fn read_summary(
    sh: &super::state::DiskState,
    file: &SegmentFile,
) -> Result<Vec<SummaryEntry>, FormatError> {
    let size = sh.config.segment_size as usize;
    let short = |needed| FormatError::Truncated {
        needed,
        available: 0,
    };
    let mut segment = vec![0u8; size];
    let io = &*sh.config.io;
    io.read_exact_at(
        &file.file,
        &mut segment[size - TRAILER_LEN..],
        (size - TRAILER_LEN) as u64,
    )
    .map_err(|_| short(size))?;
    let trailer = Trailer::decode(u64::from(file.id), &segment)?;
    let start = trailer.summary_offset as usize;
    let end = start + trailer.record_count as usize * SUMMARY_ENTRY_LEN;
    if end > size - TRAILER_LEN {
        return Err(short(end));
    }
    io.read_exact_at(&file.file, &mut segment[start..end], start as u64)
        .map_err(|_| short(end))?;
    trailer.summary(u64::from(file.id), &segment)
}

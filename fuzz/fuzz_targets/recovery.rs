//! The recovery path on directories built from the input: segment files of
//! valid records (encoded by larder's own encoders, so checksums hold and the
//! fuzzer reaches deep), sealed or not, then damaged as the input says (bit
//! flips, truncations, garbage), with or without a checkpoint. Opening a cache
//! on it must succeed or fail with an error, never panic; every value read
//! must be one the input wrote for that key; `verify_dir` must not panic.

#![no_main]

use larder::fuzzing::{
    HASH_XXH3_64, Kind, Listed, Manifest, RecordHeader, SEGMENT_HEADER_LEN, SegmentHeader,
    SegmentList, StreamState, SummaryEntry, TRAILER_LEN, Trailer, encode_record, encode_summary,
};
use larder::{Cache, hash_key};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};

const SIZE: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = Manifest {
        hash_id: HASH_XXH3_64,
        segment_size: SIZE,
    };
    std::fs::write(dir.path().join("MANIFEST"), manifest.encode()).expect("write");
    // Every value written for each key: a read must return one of them.
    let mut written: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
    let mut seq = 1u64;
    let mut chunks = data.split(|&b| b == 0xff).take(4);
    let mut id = 1u32;
    let mut list = SegmentList::default();
    for chunk in chunks.by_ref().take(3) {
        let Some((&flags, ops)) = chunk.split_first() else {
            continue;
        };
        let mut seg = SegmentHeader {
            segment_id: u64::from(id),
            first_seq: seq,
            segment_size: SIZE,
            probation: flags & 0x80 != 0,
        }
        .encode()
        .to_vec();
        let mut summary = Vec::new();
        for op in ops.chunks(4) {
            let [k, v, n, kind] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&1), *op.get(3).unwrap_or(&0)];
            let key = vec![k % 16 + 1];
            let value = vec![v; usize::from(n)];
            let tombstone = kind % 5 == 0;
            let header = RecordHeader {
                kind: if tombstone { Kind::Tombstone } else { Kind::Value },
                compressed: false,
                key_len: 1,
                stored_len: if tombstone { 0 } else { value.len() as u32 },
                raw_len: if tombstone { 0 } else { value.len() as u32 },
                expires_at: 0,
                seq,
            };
            let offset = seg.len() as u32;
            let body: &[u8] = if tombstone { &[] } else { &value };
            let mut rec = Vec::new();
            encode_record(&mut rec, u64::from(id), offset, &header, &key, body);
            if seg.len() + rec.len() + (summary.len() + 1) * 24 + TRAILER_LEN > SIZE as usize {
                break;
            }
            summary.push(SummaryEntry {
                hash: hash_key(&key),
                seq,
                offset,
                len: rec.len() as u32,
                tombstone,
                compressed: false,
                mark: false,
            });
            seg.extend_from_slice(&rec);
            if !tombstone {
                written.entry(key).or_default().insert(value);
            }
            seq += 1;
        }
        if flags & 1 == 1 {
            // Sealed: summary after the records, trailer at the end.
            let at = seg.len() as u32;
            let mut s = Vec::new();
            let crc = encode_summary(u64::from(id), &summary, &mut s);
            seg.extend_from_slice(&s);
            seg.resize(SIZE as usize - TRAILER_LEN, 0);
            let last_seq = summary.last().map_or(0, |e| e.seq);
            let t = Trailer {
                summary_offset: at,
                record_count: summary.len() as u32,
                last_seq,
                through: seq - 1,
                summary_crc: crc,
            };
            seg.extend_from_slice(&t.encode(u64::from(id)));
            if flags & 0x40 == 0 {
                let probation = flags & 0x80 != 0;
                list.live.push(Listed {
                    id,
                    probation,
                    first_seq: summary.first().map_or(seq, |e| e.seq),
                    last_seq,
                    through: seq - 1,
                    records: summary.len() as u32,
                });
                let s = &mut list.streams[usize::from(probation)];
                *s = StreamState {
                    sealed_id: id,
                    through: seq - 1,
                };
            }
        }
        // Damage, as the flags say.
        if flags & 2 == 2 && seg.len() > SEGMENT_HEADER_LEN {
            let at = usize::from(flags) * 97 % seg.len();
            seg[at] ^= 1 << (flags % 8);
        }
        if flags & 4 == 4 {
            let keep = seg.len() * usize::from(flags >> 3) / 32;
            seg.truncate(keep);
        }
        std::fs::write(dir.path().join(format!("{id:010}.seg")), &seg).expect("write");
        id += 1;
    }
    list.generation = 1;
    std::fs::write(dir.path().join("SEGMENTS"), list.encode()).expect("write");
    if let Some(rest) = chunks.next() {
        // Whatever is left: a checkpoint file, or garbage under a segment's name.
        let name = if rest.first().is_some_and(|b| b & 1 == 1) {
            "CHECKPOINT".to_string()
        } else {
            format!("{:010}.seg", 100)
        };
        std::fs::write(dir.path().join(name), rest).expect("write");
    }
    let _ = larder::verify_dir(dir.path());
    let Ok(cache) = Cache::builder()
        .memory_capacity(1 << 20)
        .disk(dir.path(), 8 * SIZE)
        .segment_size(SIZE)
        .build()
    else {
        return;
    };
    for k in 1..=16u8 {
        if let Some(v) = cache.get(&[k]) {
            let ok = written.get(&vec![k]).is_some_and(|vs| vs.contains(&v.to_vec()));
            assert!(ok, "key {k}: a value never written for it");
        }
    }
});

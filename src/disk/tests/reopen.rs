//! Reopening a directory: recovery, torn tails, quarantine, the manifest.

use super::*;

#[test]
fn one_cache_per_directory_and_settings_do_not_change_silently() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(config(dir.path(), 8)).unwrap();
    let second = DiskTier::open(config(dir.path(), 8)).err().expect("locked");
    assert!(matches!(second, DiskError::Locked(_)), "{second}");
    assert!(second.to_string().contains("in use"));
    drop(tier);
    // The lock is released with the tier; the manifest stays, and names the segment size.
    let other_size = DiskConfig {
        segment_size: 2 * SEG,
        ..config(dir.path(), 8)
    };
    let err = DiskTier::open(other_size).err().expect("mismatch");
    assert!(matches!(err, DiskError::Mismatch { .. }), "{err}");
    // A damaged manifest is set aside and written again from the settings
    // (the segments' headers agree with them)...
    std::fs::write(dir.path().join("MANIFEST"), b"garbage").unwrap();
    drop(DiskTier::open(config(dir.path(), 8)).unwrap());
    assert!(dir.path().join("MANIFEST.quarantined").exists());
    assert!(matches!(
        DiskTier::open(DiskConfig {
            segment_size: 2 * SEG,
            ..config(dir.path(), 8)
        })
        .err(),
        Some(DiskError::Mismatch { .. })
    ));
    // ... but one of another format version is refused by name.
    let mut newer = std::fs::read(dir.path().join("MANIFEST")).unwrap();
    newer[8] += 1;
    let crc = crc32fast::hash(&newer[..60]);
    newer[60..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("MANIFEST"), &newer).unwrap();
    let err = DiskTier::open(config(dir.path(), 8))
        .err()
        .expect("newer manifest");
    assert!(matches!(err, DiskError::BadManifest { .. }), "{err}");
    assert!(err.to_string().contains("version"), "{err}");
}

#[test]
fn the_default_backend_works_and_says_which_it_is() {
    let (io, note) = super::io::default_backend();
    if cfg!(feature = "io-uring") {
        // This machine's kernel allows io_uring; elsewhere the note says why not.
        assert!(io.name() == "io_uring" || note.is_some(), "{:?}", note);
    } else {
        assert_eq!((io.name(), note), ("pwrite", None));
    }
    let f = tempfile::tempfile().unwrap();
    io.write_all_at(&f, b"abc", 7).unwrap();
    io.sync_data(&f).unwrap();
    let mut b = [0u8; 3];
    io.read_exact_at(&f, &mut b, 7).unwrap();
    assert_eq!(&b, b"abc");
}

/// Reopening: every key's newest value comes back, removed keys stay removed,
/// whether the tier was dropped (the active segment unsealed) or crashed with
/// a torn tail.
#[test]
fn reopen_recovers_the_newest_values_and_no_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = std::collections::HashMap::new();
    let mut rng = StdRng::seed_from_u64(11);
    let mut version = 0u32;
    for round in 0..4 {
        let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
        let report = tier.stats().recovery;
        assert_eq!(
            report.entries as usize,
            model.len(),
            "round {round}: {report:?}"
        );
        for (&key, &v) in &model {
            assert_eq!(
                tier.get(&k(key), 0),
                Some(value(key, v, 200).into()),
                "key {key}"
            );
        }
        for _ in 0..1500 {
            let key = rng.random_range(0..500u32);
            version += 1;
            if rng.random_ratio(1, 5) {
                let _ = tier.remove(&k(key), h(key));
                model.remove(&key);
            } else {
                tier.put(&k(key), &value(key, version, 200), 0).unwrap();
                model.insert(key, version);
            }
        }
        tier.sync().unwrap();
        assert!(tier.stats().segments >= 2);
    }
    // Nothing lost, nothing extra; each open sealed the segment the previous
    // one left active (dropping a tier syncs it but does not seal it).
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    for key in 0..500u32 {
        let want = model
            .get(&key)
            .map(|&v| bytes::Bytes::from(value(key, v, 200)));
        assert_eq!(tier.get(&k(key), 0), want, "key {key}");
    }
    let r = tier.stats().recovery;
    assert_eq!(r.sealed_tails, 1, "the last one's active segment: {r:?}");
    assert_eq!(r.torn_tails, 0);
}

/// A crash that tears the last write: what a `sync()` covered survives, the
/// torn record is cut off, and so is everything after the last mark (format
/// md §1.2) that proves the other stream complete: the log at one moment.
#[test]
fn a_torn_tail_is_cut_at_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
        for key in 0..100u32 {
            tier.put(&k(key), &value(key, 0, 100), 0).unwrap();
        }
        tier.sync().unwrap();
        for key in 100..110u32 {
            tier.put(&k(key), &value(key, 0, 100), 0).unwrap();
        }
    } // dropped: the last ten written, and a mark after them
    // The last (unsealed) segment: chop its last write, the mark, in half,
    // as a crash would. Its records end at its last non-zero byte (direct
    // writes pad the file with zeros to a whole block).
    let last = segment_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(end - 30).unwrap();
    drop(f);
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let r = tier.stats().recovery;
    assert_eq!(r.sealed_tails, 1, "{r:?}");
    assert_eq!(r.torn_tails, 1, "{r:?}");
    assert_eq!(r.entries, 100, "{r:?}");
    assert_eq!(r.void_records, 10, "after the last proof: {r:?}");
    for key in 0..100u32 {
        assert_eq!(tier.get(&k(key), 0).unwrap(), value(key, 0, 100));
    }
    for key in 100..110u32 {
        assert!(tier.get(&k(key), 0).is_none(), "key {key} is void");
    }
    // And the tier goes on writing after it.
    tier.put(&k(100), &value(100, 1, 100), 0).unwrap();
    tier.sync().unwrap();
    drop(tier);
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    assert_eq!(tier.get(&k(100), 0).unwrap(), value(100, 1, 100));
    assert_eq!(tier.stats().recovery.entries, 101);
}

#[test]
fn bad_and_foreign_segment_files_are_quarantined_or_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
        for key in 0..600u32 {
            tier.put(&k(key), &value(key, 0, 300), 0).unwrap();
        }
        tier.sync().unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // A bad header on the first, a foreign file, garbage under a segment's name.
    let mut first = std::fs::read(&files[0]).unwrap();
    first[3] ^= 0xff;
    std::fs::write(&files[0], &first).unwrap();
    std::fs::write(dir.path().join("notes.seg"), b"hello").unwrap();
    std::fs::write(dir.path().join("0000099999.seg"), vec![7u8; 5000]).unwrap();
    let tier = DiskTier::open(config(dir.path(), 64)).unwrap();
    let r = tier.stats().recovery;
    assert_eq!(r.quarantined_files, 2, "{r:?}");
    assert_eq!(r.foreign_files, 1, "{r:?}");
    assert!(
        dir.path().join("notes.seg").exists(),
        "not ours: left alone"
    );
    assert!(files[0].with_extension("seg.quarantined").exists());
    let mut found = 0;
    for key in 0..600u32 {
        if let Some(v) = tier.get(&k(key), 0) {
            assert_eq!(v, value(key, 0, 300));
            found += 1;
        }
    }
    assert!(found > 300 && found < 600, "{found}");
}

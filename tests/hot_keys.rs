//! Hot-key detection against a Zipf(0.99) stream over 1M keys: the
//! reported top 10 against the true top 10 (the stream's ten most likely
//! keys), and what it reports once the stream's hot set moves.

use larder::Cache;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};

fn precision(cache: &Cache, truth: impl Fn(u64) -> bool) -> usize {
    cache
        .hot_keys(10)
        .iter()
        .filter(|(k, _)| truth(u64::from_le_bytes(k[..].try_into().unwrap())))
        .count()
}

#[test]
fn the_top_ten_of_a_zipf_stream_is_found_and_follows_the_stream() {
    for seed in [7, 8, 9] {
        zipf_stream(seed);
    }
}

fn zipf_stream(seed: u64) {
    let cache = Cache::builder()
        .memory_capacity(1 << 20)
        .track_hot_keys()
        .build()
        .unwrap();
    let zipf = Zipf::new(1_000_000.0, 0.99).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    // Ranks 1..=10 are the ten most likely keys of the stream.
    for _ in 0..1_000_000 {
        let key = zipf.sample(&mut rng) as u64;
        cache.get(&key.to_le_bytes());
    }
    let found = precision(&cache, |k| (1..=10).contains(&k));
    eprintln!("top 10: {found} of 10: {:?}", cache.hot_keys(10));
    assert!(found >= 9, "precision {found}/10: {:?}", cache.hot_keys(10));
    // The hot set moves (every key shifted by 5M): the window follows.
    for _ in 0..1_200_000 {
        let key = zipf.sample(&mut rng) as u64 + 5_000_000;
        cache.get(&key.to_le_bytes());
    }
    let found = precision(&cache, |k| (5_000_001..=5_000_010).contains(&k));
    assert!(
        found >= 9,
        "after the shift {found}/10: {:?}",
        cache.hot_keys(10)
    );
}

#[test]
fn without_tracking_nothing_is_reported() {
    let cache = Cache::builder().memory_capacity(1 << 20).build().unwrap();
    for _ in 0..1_000 {
        cache.get(b"k");
    }
    assert!(cache.hot_keys(10).is_empty());
}

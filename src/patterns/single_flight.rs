//! Single-flight: concurrent misses on one key run one loader; the others wait
//! for its outcome: its value (or its word that there is none), its error (shared, type-erased: a waiter takes
//! it if it expects that error type), or the cache's refusal of its value. A
//! loader that panics releases the waiters, which retry (one of them becomes
//! the next leader). The flight ends with its outcome, so a key is never
//! poisoned: the next miss loads again.

use crate::error::Error;
use crate::sync::{Arc, Condvar, Mutex};
use bytes::Bytes;
use std::any::Any;
use std::collections::HashMap;

/// A loader's error, as the waiters share it.
pub(crate) type SharedError = Arc<dyn Any + Send + Sync>;

enum State {
    Running,
    /// The loaded value; `None`: the loader said there is none.
    Done(Option<Bytes>),
    /// The loader failed with this error.
    Failed(SharedError),
    /// The cache refused the loaded value.
    Refused(Error),
    /// The leader panicked: waiters retry.
    Abandoned,
}

struct Flight {
    state: Mutex<State>,
    done: Condvar,
}

/// The flights of one stripe, by key.
type Stripe = Mutex<HashMap<Box<[u8]>, Arc<Flight>>>;

/// The flights in progress, striped like the memory tier.
pub(crate) struct Flights {
    stripes: Box<[Stripe]>,
}

/// The caller's part in a flight.
pub(crate) enum Role<'a> {
    /// Run the loader, then call [`Leader::finish`].
    Leader(Leader<'a>),
    /// Another caller loaded this value (`None`: its loader found none).
    Shared(Option<Bytes>),
    /// Another caller's loader failed with this error.
    Failed(SharedError),
    /// The cache refused the value another caller loaded.
    Refused(Error),
    /// The leader gave up: look up and try again.
    Retry,
}

/// The one caller that runs the loader. Dropping it without an outcome (a
/// panic in the loader) wakes the waiters so they retry.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    stripe: usize,
    key: &'a [u8],
    flight: Arc<Flight>,
    settled: bool,
}

impl Flights {
    pub(crate) fn new(stripes: usize) -> Self {
        Flights {
            stripes: (0..stripes.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// Joins the flight for `key` or starts one.
    pub(crate) fn join<'a>(&'a self, hash: u64, key: &'a [u8]) -> Role<'a> {
        let stripe = (hash >> 32) as usize % self.stripes.len();
        let flight = {
            let mut map = self.stripes[stripe].lock();
            match map.get(key) {
                Some(f) => Arc::clone(f),
                None => {
                    let flight = Arc::new(Flight {
                        state: Mutex::new(State::Running),
                        done: Condvar::new(),
                    });
                    map.insert(key.into(), Arc::clone(&flight));
                    return Role::Leader(Leader {
                        flights: self,
                        stripe,
                        key,
                        flight,
                        settled: false,
                    });
                }
            }
        };
        let mut state = flight.state.lock();
        while matches!(*state, State::Running) {
            flight.done.wait(&mut state);
        }
        match &*state {
            State::Done(v) => Role::Shared(v.clone()),
            State::Failed(e) => Role::Failed(Arc::clone(e)),
            State::Refused(e) => Role::Refused(e.clone()),
            State::Running | State::Abandoned => Role::Retry,
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }
}

impl Leader<'_> {
    /// Publishes the loaded value (or that there is none) to the waiters.
    pub(crate) fn finish(mut self, value: Option<Bytes>) {
        self.settle(State::Done(value));
    }

    /// Publishes the loader's error to the waiters.
    pub(crate) fn fail(mut self, error: SharedError) {
        self.settle(State::Failed(error));
    }

    /// Publishes the cache's refusal of the loaded value to the waiters.
    pub(crate) fn refuse(mut self, error: Error) {
        self.settle(State::Refused(error));
    }

    fn settle(&mut self, outcome: State) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.flights.stripes[self.stripe].lock().remove(self.key);
        let mut state = self.flight.state.lock();
        if matches!(*state, State::Running) {
            *state = outcome;
        }
        self.flight.done.notify_all();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // No-op after `finish`.
        self.settle(State::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandoned_flight_releases_waiters_and_cleans_up() {
        let flights = Flights::new(4);
        let Role::Leader(leader) = flights.join(1, b"k") else {
            panic!("first caller must lead");
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(|| matches!(flights.join(1, b"k"), Role::Retry));
            // The map and the leader hold the flight; wait for the waiter to hold it too.
            while Arc::strong_count(&leader.flight) < 3 {
                std::thread::yield_now();
            }
            drop(leader);
            assert!(
                waiter.join().unwrap(),
                "waiter must retry after an abandoned flight"
            );
        });
        assert_eq!(flights.in_flight(), 0);
        assert!(matches!(flights.join(1, b"k"), Role::Leader(_)));
    }
}

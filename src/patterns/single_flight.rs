//! Single-flight: concurrent misses on one key run one loader; the others wait
//! (a thread blocked, or an async task parked) for its outcome: its value (or its word that there is none), its error (shared, type-erased: a waiter takes
//! it if it expects that error type), or the cache's refusal of its value. A
//! loader that panics releases the waiters, which retry (one of them becomes
//! the next leader). The flight ends with its outcome, so a key is never
//! poisoned: the next miss loads again.

use crate::error::Error;
use crate::sync::{Arc, Condvar, Mutex};
use bytes::Bytes;
use std::any::Any;
use std::collections::HashMap;
use std::task::{Poll, Waker};

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
    /// The leader panicked or was cancelled: waiters retry.
    Abandoned,
}

struct Slot {
    state: State,
    /// Async waiters to wake when the flight ends.
    wakers: Vec<Waker>,
}

struct Flight {
    slot: Mutex<Slot>,
    /// Threads waiting for the flight to end.
    done: Condvar,
}

impl Flight {
    /// What a waiter gets, once the flight has ended (`None` while it runs).
    fn outcome(slot: &Slot) -> Option<Outcome> {
        Some(match &slot.state {
            State::Running => return None,
            State::Done(v) => Outcome::Shared(v.clone()),
            State::Failed(e) => Outcome::Failed(Arc::clone(e)),
            State::Refused(e) => Outcome::Refused(e.clone()),
            State::Abandoned => Outcome::Retry,
        })
    }
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
    /// Wait for the leader: [`Follower::wait`] or [`Follower::wait_async`].
    Follower(Follower),
}

/// How a flight ended, as a waiter sees it.
pub(crate) enum Outcome {
    /// Another caller loaded this value (`None`: its loader found none).
    Shared(Option<Bytes>),
    /// Another caller's loader failed with this error.
    Failed(SharedError),
    /// The cache refused the value another caller loaded.
    Refused(Error),
    /// The leader gave up (a panic, or its future was dropped): look up and
    /// try again.
    Retry,
}

/// The one caller that runs the loader. Dropping it without an outcome (a
/// panic in the loader, or a cancelled future) wakes the waiters so they
/// retry, and one of them leads the next flight.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    stripe: usize,
    key: &'a [u8],
    flight: Arc<Flight>,
    settled: bool,
}

/// A caller waiting on another's flight.
pub(crate) struct Follower {
    flight: Arc<Flight>,
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
        let mut map = self.stripes[stripe].lock();
        if let Some(f) = map.get(key) {
            return Role::Follower(Follower {
                flight: Arc::clone(f),
            });
        }
        let flight = Arc::new(Flight {
            slot: Mutex::new(Slot {
                state: State::Running,
                wakers: Vec::new(),
            }),
            done: Condvar::new(),
        });
        map.insert(key.into(), Arc::clone(&flight));
        Role::Leader(Leader {
            flights: self,
            stripe,
            key,
            flight,
            settled: false,
        })
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }
}

impl Follower {
    /// Blocks the thread until the flight ends.
    pub(crate) fn wait(self) -> Outcome {
        let mut slot = self.flight.slot.lock();
        loop {
            if let Some(outcome) = Flight::outcome(&slot) {
                return outcome;
            }
            self.flight.done.wait(&mut slot);
        }
    }

    /// Waits for the flight to end without blocking the thread. Dropping
    /// the future stops waiting and changes nothing else.
    pub(crate) fn wait_async(self) -> impl Future<Output = Outcome> {
        std::future::poll_fn(move |cx| {
            let mut slot = self.flight.slot.lock();
            if let Some(outcome) = Flight::outcome(&slot) {
                return Poll::Ready(outcome);
            }
            if !slot.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                slot.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
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
        let wakers = {
            let mut slot = self.flight.slot.lock();
            if matches!(slot.state, State::Running) {
                slot.state = outcome;
            }
            self.flight.done.notify_all();
            std::mem::take(&mut slot.wakers)
        };
        // Outside the lock: a waker may run its task at once.
        for w in wakers {
            w.wake();
        }
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
            let waiter = s.spawn(|| match flights.join(1, b"k") {
                Role::Follower(f) => matches!(f.wait(), Outcome::Retry),
                Role::Leader(_) => false,
            });
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

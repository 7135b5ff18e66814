//! One budget of memory for all images being decoded at once, across threads. Each image's
//! limit bounds one decode; this bounds their sum, so eight bombs of a gigabyte each on eight
//! cores wait their turn instead of exhausting memory (which aborts the process, losing the
//! scan). An image that alone needs more than the whole budget is refused before anything is
//! allocated: that file's error, not the process's end.

use std::sync::{Condvar, Mutex};

static IN_USE: Mutex<u64> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// Bytes held from the budget until dropped.
#[derive(Debug)]
pub(crate) struct Reservation(u64);

/// Takes `bytes` from a budget of `capacity`, waiting while other decodes hold too much of it;
/// `None` when `bytes` alone exceed `capacity`.
pub(crate) fn reserve(bytes: u64, capacity: u64) -> Option<Reservation> {
    if bytes > capacity {
        return None;
    }
    let mut used = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    // Alone, an image always fits: it was checked against the capacity above.
    while *used > 0 && *used + bytes > capacity {
        used = FREED.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += bytes;
    Some(Reservation(bytes))
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.0);
        FREED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_beyond_the_capacity_wait_and_too_large_ones_are_refused() {
        assert!(reserve(11, 10).is_none());
        let first = reserve(6, 10).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let second = reserve(6, 10).unwrap();
            tx.send(()).unwrap();
            drop(second);
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err(), "waits while 6 of 10 are held");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("runs once freed");
        waiter.join().unwrap();
    }
}

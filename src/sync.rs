//! The one way baton takes a std mutex: a lock whose holder panicked is
//! taken anyway. Every mutex here guards data that stays consistent at
//! each await-free step (a slot, a map, a counter), and a run that panics
//! is already reported by its guard; refusing the lock would turn one
//! panicked run into a stuck scheduler.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, recovering it if a holder panicked.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

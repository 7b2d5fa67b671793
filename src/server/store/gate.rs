//! The one way to the database's trees, so that compaction can swap the whole database while
//! the server runs: every store operation holds a shared pass for as long as it reads or writes,
//! and a swap waits until no pass is out (and lets no new one start) before it replaces the
//! trees, so that no write lands in a database after it was replaced.
//!
//! A compaction copies the database without a pass (see [`Gate::current`]); it takes sole
//! access only for its last step, to replay what was written meanwhile and swap.
//!
//! A pass is re-entrant on its thread: a store method holding one may call another store method,
//! which then takes its own pass without waiting, even while a swap is waiting. A pass cannot
//! leave its thread (it is `!Send`), so it is never held across an `.await`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

thread_local! {
    /// How many passes (of any gate) this thread holds.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

struct State<T> {
    current: Arc<T>,
    passes: usize,
    swapping: bool,
}

/// Holds the current value (the open trees) and hands out passes to it.
pub struct Gate<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

/// Shared access to the current value; a swap waits until every pass is dropped.
pub struct Pass<'a, T> {
    gate: &'a Gate<T>,
    value: Arc<T>,
    /// Keeps the pass on the thread that counted it.
    _not_send: PhantomData<*const ()>,
}

/// Sole access to the current value: no pass is out and none can start until it is dropped.
pub struct Sole<'a, T> {
    gate: &'a Gate<T>,
    value: Arc<T>,
}

impl<T> Gate<T> {
    /// A gate around `value`.
    pub fn new(value: T) -> Gate<T> {
        Gate {
            state: Mutex::new(State { current: Arc::new(value), passes: 0, swapping: false }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'g>(&self, guard: MutexGuard<'g, State<T>>) -> MutexGuard<'g, State<T>> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// A shared pass; waits while a swap is pending or running, unless this thread already
    /// holds a pass.
    pub fn pass(&self) -> Pass<'_, T> {
        let nested = HELD.with(Cell::get) > 0;
        let mut state = self.lock();
        while state.swapping && !nested {
            state = self.wait(state);
        }
        state.passes += 1;
        HELD.with(|held| held.set(held.get() + 1));
        Pass { gate: self, value: Arc::clone(&state.current), _not_send: PhantomData }
    }

    /// The current value, without a pass: a swap does not wait for it. Only for the one who
    /// swaps (a compaction reads the database it copies through this while others write).
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.lock().current)
    }

    /// Sole access: stops new passes, then waits for the ones out to be dropped. The calling
    /// thread must hold no pass itself.
    pub fn sole(&self) -> Sole<'_, T> {
        debug_assert_eq!(HELD.with(Cell::get), 0, "a thread holding a pass asked for sole access");
        let mut state = self.lock();
        while state.swapping {
            state = self.wait(state);
        }
        state.swapping = true;
        while state.passes > 0 {
            state = self.wait(state);
        }
        Sole { gate: self, value: Arc::clone(&state.current) }
    }
}

impl<T> Deref for Pass<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Pass<'_, T> {
    fn drop(&mut self) {
        HELD.with(|held| held.set(held.get() - 1));
        let mut state = self.gate.lock();
        state.passes -= 1;
        if state.passes == 0 {
            self.gate.changed.notify_all();
        }
    }
}

impl<T> Sole<'_, T> {
    /// Makes `value` the current value; passes taken from now on see it.
    pub fn replace(&mut self, value: T) {
        let value = Arc::new(value);
        self.gate.lock().current = Arc::clone(&value);
        self.value = value;
    }
}

impl<T> Deref for Sole<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Sole<'_, T> {
    fn drop(&mut self) {
        self.gate.lock().swapping = false;
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_swap_waits_for_passes_and_later_passes_see_the_new_value() {
        let gate = Arc::new(Gate::new(1));
        let pass = gate.pass();
        let swapped = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (gate, swapped) = (Arc::clone(&gate), Arc::clone(&swapped));
            std::thread::spawn(move || {
                let mut sole = gate.sole();
                sole.replace(2);
                swapped.store(true, Ordering::SeqCst);
            })
        };
        // The swap cannot finish while the pass is out; a nested pass does not wait for it.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!swapped.load(Ordering::SeqCst));
        assert_eq!(*gate.pass(), 1);
        assert_eq!(*pass, 1);
        drop(pass);
        swapper.join().unwrap();
        assert!(swapped.load(Ordering::SeqCst));
        assert_eq!(*gate.pass(), 2);
    }
}

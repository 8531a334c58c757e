//! Upload slots whose number can change while uploads hold them: the dispatcher takes one per
//! file, and the concurrency controller moves the limit. Lowering it below the slots taken takes
//! effect as uploads end: their slots are forgotten instead of given back, until the debt is
//! paid.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    semaphore: Arc<Semaphore>,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Slots to forget as they come back (the limit was lowered below the slots taken).
    debt: usize,
}

/// One upload's slot; given back (or forgotten, to lower the limit) when dropped.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    state: Arc<Mutex<State>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("slots lock");
        if state.debt > 0 {
            state.debt -= 1;
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
        // Otherwise the permit goes back when dropped, still under the lock: a lowering that
        // runs meanwhile sees it either taken or free, never both.
        drop(self.permit.take());
    }
}

impl Slots {
    pub fn new(limit: usize) -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(limit)),
            state: Arc::new(Mutex::new(State { limit, debt: 0 })),
        }
    }

    pub fn limit(&self) -> usize {
        self.state.lock().expect("slots lock").limit
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            state: self.state.clone(),
        }
    }

    /// A slot, once one is free.
    pub async fn acquire(&self) -> Slot {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the slots' semaphore is never closed");
        self.slot(permit)
    }

    /// A slot now, if one is free.
    pub fn try_acquire(&self) -> Option<Slot> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// Moves the limit: a raise frees slots at once; a lowering takes free slots at once and the
    /// rest as uploads end.
    pub fn set_limit(&self, limit: usize) {
        let mut state = self.state.lock().expect("slots lock");
        if limit > state.limit {
            let raise = limit - state.limit;
            let paid = raise.min(state.debt);
            state.debt -= paid;
            self.semaphore.add_permits(raise - paid);
        } else {
            let lower = state.limit - limit;
            let taken = self.semaphore.forget_permits(lower);
            state.debt += lower - taken;
        }
        state.limit = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_waits_for_the_slots_taken() {
        let slots = Slots::new(4);
        let taken: Vec<_> = (0..4).map(|_| slots.try_acquire().unwrap()).collect();
        slots.set_limit(2);
        assert!(slots.try_acquire().is_none());
        let mut taken = taken.into_iter();
        drop(taken.next());
        drop(taken.next());
        // Two slots were forgotten as they came back: still none free with two taken.
        assert!(slots.try_acquire().is_none());
        drop(taken.next());
        let one = slots.try_acquire().expect("a slot under the new limit");
        assert!(slots.try_acquire().is_none());
        drop(one);
        drop(taken);
        assert_eq!(slots.semaphore.available_permits(), 2);
    }

    #[test]
    fn raising_pays_the_debt_first() {
        let slots = Slots::new(4);
        let taken: Vec<_> = (0..4).map(|_| slots.try_acquire().unwrap()).collect();
        slots.set_limit(1);
        slots.set_limit(3);
        drop(taken);
        assert_eq!(slots.semaphore.available_permits(), 3);
        assert_eq!(slots.limit(), 3);
        slots.set_limit(8);
        assert_eq!(slots.semaphore.available_permits(), 8);
    }
}

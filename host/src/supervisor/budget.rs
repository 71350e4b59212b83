//! The run's spending limit, with reservations.
//!
//! Before an LLM call the worst-case cost is reserved; after it the reservation is
//! settled with the real cost. A reservation that does not fit in
//! `limit - spent - reserved` is refused, and the check and the reservation happen
//! under one lock, so concurrent agents cannot together overspend.

use std::sync::Mutex;

#[derive(Debug, Default)]
struct State {
    limit: f64,
    spent: f64,
    reserved: f64,
}

/// A run-wide budget in USD.
#[derive(Debug)]
pub struct Budget(Mutex<State>);

/// An amount set aside for one call; settle it with [`Budget::settle`].
#[derive(Debug)]
#[must_use]
pub struct Reservation(f64);

impl Budget {
    /// A budget of `limit` USD.
    pub fn new(limit: f64) -> Budget {
        Budget(Mutex::new(State {
            limit,
            ..Default::default()
        }))
    }

    /// Reserve `amount`, or say why it does not fit.
    pub fn reserve(&self, amount: f64) -> Result<Reservation, String> {
        let mut s = self.0.lock().unwrap();
        if s.spent + s.reserved + amount > s.limit + 1e-12 {
            return Err(format!(
                "run budget ${:.6}: spent ${:.6}, reserved ${:.6}, this call may cost up to ${:.6}",
                s.limit, s.spent, s.reserved, amount
            ));
        }
        s.reserved += amount;
        Ok(Reservation(amount))
    }

    /// Release a reservation and charge the real cost.
    pub fn settle(&self, reservation: Reservation, actual: f64) {
        let mut s = self.0.lock().unwrap();
        s.reserved = (s.reserved - reservation.0).max(0.0);
        s.spent += actual;
    }

    /// Charge an amount already spent (e.g. by the recorded calls of a resumed run).
    pub fn charge(&self, amount: f64) {
        self.0.lock().unwrap().spent += amount;
    }

    /// What is neither spent nor reserved.
    pub fn remaining(&self) -> f64 {
        let s = self.0.lock().unwrap();
        (s.limit - s.spent - s.reserved).max(0.0)
    }

    /// Total spent so far.
    pub fn spent(&self) -> f64 {
        self.0.lock().unwrap().spent
    }
}

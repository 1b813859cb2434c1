//! What a data-path thread keeps for its next requests (`pending`'s read buffers,
//! `spared`'s request blocks): taken and given back with a pop and a push, bounded, and
//! trimmed once a second (`tidy`) to what the thread needed since the last trim, so that a
//! burst's spares do not stay resident after it.

/// Spares kept at most: as many as requests in flight on a thread, bounded.
const MAX: usize = 64;

/// Spares kept once a second has passed without needing more.
pub const QUIET: usize = 4;

pub struct Spares<T> {
    free: Vec<T>,
    /// The fewest spares there were since the last trim: what the thread did not need.
    low: usize,
}

impl<T> Default for Spares<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Spares<T> {
    pub const fn new() -> Self {
        Spares {
            free: Vec::new(),
            low: 0,
        }
    }

    pub fn take(&mut self) -> Option<T> {
        let spare = self.free.pop();
        self.low = self.low.min(self.free.len());
        spare
    }

    /// Keeps `spare`, or hands it back when there are enough.
    pub fn give(&mut self, spare: T) -> Result<(), T> {
        if self.free.len() < MAX {
            self.free.push(spare);
            Ok(())
        } else {
            Err(spare)
        }
    }

    /// The spares not needed since the last trim, beyond a few, for the caller to let go.
    pub fn trim(&mut self) -> Vec<T> {
        let keep = self
            .free
            .len()
            .saturating_sub(self.low)
            .max(QUIET)
            .min(self.free.len());
        let surplus = self.free.split_off(keep);
        self.free.shrink_to_fit();
        self.low = self.free.len();
        surplus
    }

    /// Every spare, for the caller to let go.
    pub fn all(&mut self) -> Vec<T> {
        self.low = 0;
        std::mem::take(&mut self.free)
    }

    pub fn len(&self) -> usize {
        self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_not_needed_for_a_trim_are_let_go() {
        let mut s = Spares::new();
        (0..10).for_each(|i| s.give(i).expect("room"));
        // The burst's spares were all in use at once: the first trim keeps them...
        assert!(s.trim().is_empty());
        assert_eq!(s.len(), 10);
        // ... and the next lets go of those not needed since, down to a few.
        let one = s.take().expect("a spare");
        s.give(one).expect("room");
        assert_eq!(s.trim().len(), 10 - QUIET);
        assert_eq!(s.len(), QUIET);
        (0..MAX).for_each(|i| {
            let _ = s.give(i);
        });
        assert_eq!(s.give(0), Err(0), "bounded");
        assert_eq!(s.all().len(), MAX);
        assert!(s.is_empty());
    }
}

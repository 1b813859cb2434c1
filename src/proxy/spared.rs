//! A request's future placed in a block of memory taken from its thread's spares, and the
//! block given back when the request is done. An idle keep-alive connection's task then
//! holds only what waiting for bytes needs: with the fast path's request future inline
//! (4 KiB, most of it the parsed head's header slots and the upstream exchange), every
//! idle client kept 4 KiB it did not use. A plain `Box` per request would do the same at
//! the cost of an allocation and a free per request on the hot path; a spare block is
//! taken and given back with a push and a pop, as `pending`'s read buffers are.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use super::spares::Spares;

/// One size of block per thread (the first future placed decides it; the fast path places
/// one type only). A future of another size gets a block of its own, freed after it.
struct Blocks {
    layout: Option<Layout>,
    free: Spares<NonNull<u8>>,
}

impl Blocks {
    /// Frees blocks taken out of `free`.
    fn dealloc(&self, blocks: Vec<NonNull<u8>>) {
        if let Some(layout) = self.layout {
            for block in blocks {
                // SAFETY: every block in `free` was allocated with `layout` and is unused.
                unsafe { alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

/// Lets go of the blocks this thread did not need since the last call.
pub fn trim_spares() {
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        let surplus = b.free.trim();
        b.dealloc(surplus);
    });
}

impl Drop for Blocks {
    fn drop(&mut self) {
        let all = self.free.all();
        self.dealloc(all);
    }
}

thread_local! {
    static BLOCKS: RefCell<Blocks> = const {
        RefCell::new(Blocks { layout: None, free: Spares::new() })
    };
}

fn take(layout: Layout) -> NonNull<u8> {
    if layout.size() == 0 {
        // A zero-sized future is written and dropped without touching memory.
        return NonNull::<u8>::dangling().map_addr(|_| {
            std::num::NonZeroUsize::new(layout.align()).unwrap_or(std::num::NonZeroUsize::MIN)
        });
    }
    let spare = BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        match b.layout {
            Some(l) if l == layout => b.free.take(),
            Some(_) => None,
            None => {
                b.layout = Some(layout);
                None
            }
        }
    });
    if let Some(block) = spare {
        return block;
    }
    // SAFETY: `layout` has a non-zero size.
    let block = unsafe { alloc::alloc(layout) };
    NonNull::new(block).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

fn give(block: NonNull<u8>, layout: Layout) {
    if layout.size() == 0 {
        return;
    }
    let kept = BLOCKS
        .try_with(|b| {
            let mut b = b.borrow_mut();
            b.layout == Some(layout) && b.free.give(block).is_ok()
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `block` was allocated with `layout` (in `take`) and is no longer used.
        unsafe { alloc::dealloc(block.as_ptr(), layout) };
    }
}

/// A future in a spare block: like `Box::pin(future)`, without an allocation per request
/// once the thread has blocks to spare.
pub struct Spared<F: Future> {
    /// Points at an initialised `F`, pinned there until dropped in place.
    block: NonNull<F>,
}

impl<F: Future> Spared<F> {
    /// Makes the future in the block (after taking it, so that the future can be written
    /// there directly rather than copied from the stack).
    #[inline(always)]
    pub fn new(make: impl FnOnce() -> F) -> Self {
        let block = take(Layout::new::<F>()).cast::<F>();
        // SAFETY: the block is valid for writes of `F` (its layout) and holds nothing.
        unsafe { block.as_ptr().write(make()) };
        Spared { block }
    }
}

impl<F: Future> Future for Spared<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the `F` in the block is never moved: `Spared` only hands out pinned
        // references to it and drops it in place.
        unsafe { Pin::new_unchecked(&mut *self.block.as_ptr()) }.poll(cx)
    }
}

impl<F: Future> Drop for Spared<F> {
    fn drop(&mut self) {
        // SAFETY: the block holds an initialised `F`, dropped exactly once, here; then the
        // memory is unused and goes back.
        unsafe { std::ptr::drop_in_place(self.block.as_ptr()) };
        give(self.block.cast(), Layout::new::<F>());
    }
}

// SAFETY: `Spared<F>` owns its `F` as a `Box<F>` would; the block is plain memory from the
// global allocator, which may be given back or freed on any thread.
unsafe impl<F: Future + Send> Send for Spared<F> {}

// The block moves with `Spared`; the future in it stays put.
impl<F: Future> Unpin for Spared<F> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn free_blocks() -> usize {
        BLOCKS.with(|b| b.borrow().free.len())
    }

    async fn work(big: [u8; 3000], witness: Rc<()>, wait: bool) -> usize {
        if wait {
            std::future::pending::<()>().await;
        }
        tokio::task::yield_now().await;
        let _keep = witness;
        big.iter().map(|&b| usize::from(b)).sum()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_block_is_reused_and_its_future_dropped_once() {
        let witness = Rc::new(());
        let first = Spared::new(|| work([7; 3000], Rc::clone(&witness), false));
        assert_eq!(first.await, 21_000);
        assert_eq!(Rc::strong_count(&witness), 1, "the future was dropped");
        let spares = free_blocks();
        assert!(spares >= 1, "its block went back");
        // The same future again takes that block rather than a new one.
        let again = Spared::new(|| work([1; 3000], Rc::clone(&witness), false));
        assert_eq!(free_blocks(), spares - 1);
        assert_eq!(again.await, 3000);
        assert_eq!(free_blocks(), spares);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_future_dropped_unfinished_is_dropped_in_place() {
        let witness = Rc::new(());
        let mut pending = Spared::new(|| work([0; 3000], Rc::clone(&witness), true));
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut pending).poll(cx))).await;
        assert!(polled.is_pending());
        assert_eq!(Rc::strong_count(&witness), 2);
        drop(pending);
        assert_eq!(Rc::strong_count(&witness), 1);
    }

    #[test]
    fn blocks_not_needed_for_a_second_are_let_go() {
        let layout = Layout::from_size_align(256, 8).expect("layout");
        BLOCKS.with(|b| {
            let mut b = b.borrow_mut();
            let all = b.free.all();
            b.dealloc(all);
            b.layout = None;
        });
        let taken: Vec<_> = (0..10).map(|_| take(layout)).collect();
        taken.into_iter().for_each(|block| give(block, layout));
        assert_eq!(free_blocks(), 10);
        // The burst's blocks were all in use at once: the first trim keeps them...
        trim_spares();
        assert_eq!(free_blocks(), 10);
        // ... and the next lets go of those not needed since, down to a few.
        let one = take(layout);
        give(one, layout);
        trim_spares();
        assert_eq!(free_blocks(), 1.max(super::super::spares::QUIET));
    }

    async fn hop(n: usize, big: [u8; 2000]) -> usize {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
        big.iter().map(|&b| usize::from(b)).sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_move_between_threads_with_their_tasks() {
        // Tasks that migrate between workers finish, and drop their futures, on a thread
        // other than the one that took the block: it goes to that thread's spares (or is
        // freed), never twice.
        let tasks: Vec<_> = (0..200)
            .map(|i| tokio::spawn(Spared::new(move || hop(i % 7, [1; 2000]))))
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("task"), 2000);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_zero_sized_future_needs_no_block() {
        let before = free_blocks();
        let nothing = Spared::new(std::future::pending::<()>);
        drop(nothing);
        assert_eq!(free_blocks(), before);
    }
}

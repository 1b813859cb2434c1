//! The guard: automatic rollback of a route whose target misbehaves. The data path
//! records each target outcome in the route's [`Window`] (atomics only); the control
//! plane reads the window a few times a second and applies the pure [`verdict`].

mod verdict;
mod window;

pub use verdict::verdict;
pub use window::{Sketch, Window, WindowStats};

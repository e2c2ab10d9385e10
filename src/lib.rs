#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
mod doorbell;
mod layout;
mod ring;
mod sync;
mod sys;

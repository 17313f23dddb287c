#![doc = include_str!("../README.md")]

mod behaviour;
mod control;
mod handler;
mod shared;
mod upgrade;

pub use behaviour::{AlreadyRegistered, Behaviour};
pub use control::{Control, IncomingStreams, OpenStreamError};
// CPNS patch: the hand-off bound, for documentation and tests.
pub use shared::INBOUND_STREAM_BUFFER;

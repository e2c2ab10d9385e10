//! Calls: typed request/response over a channel, with correlation ids,
//! pipelining, timeouts and replies routed to their caller.
//!
//! A call channel is an ordinary duplex channel whose directions are typed
//! [`Requests<Req>`](Requests) and [`Replies<Resp, E>`](Replies). Each
//! message is a 16-byte prefix (correlation id, status) followed by the
//! rkyv archive at offset 16 (`wire.rs`), so requests and replies are read
//! in place like any typed message, under the same receive modes.
//!
//! * [`Client`] (`client.rs`, table in `table.rs`): issues ids
//!   (slot | generation), bounds the calls in flight, routes each reply,
//!   discards late replies to abandoned calls, reports forged ids.
//! * [`Server`] (`server.rs`): receives [`Incoming`] calls, answers them at
//!   once or later through a [`ReplyHandle`].
//! * Errors (`error.rs`): [`CallError`], [`ReplyError`].

mod client;
mod error;
mod server;
mod table;
mod ticket;
mod wire;

pub use client::{Client, DEFAULT_IN_FLIGHT, Reply};
pub use error::{CallError, ReplyError};
pub use server::{Incoming, ReplyHandle, Server};
pub use ticket::Ticket;
pub use wire::{Replies, Requests};

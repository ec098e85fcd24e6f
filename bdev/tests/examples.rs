// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The examples run as tests: each is compiled into this binary as a module and its
//! `main` called, so an example that stops working (not only one that stops
//! compiling) fails the suite. Each example bounds its own waits.

#[path = "../examples/async_io.rs"]
mod async_io;
#[path = "../examples/events_and_room.rs"]
mod events_and_room;

#[test]
fn async_io_example_runs() {
    async_io::main().expect("examples/async_io.rs");
}

#[test]
fn events_and_room_example_runs() {
    events_and_room::main().expect("examples/events_and_room.rs");
}

//! The block layer (reactors, bdevs, multipath). See the crate README.
#![deny(missing_docs)]

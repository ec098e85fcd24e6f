// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The block layer's errors. Data-path failures of an I/O are not errors: they are a
//! [`Status`](nvme_driver::Status) delivered with its completion.

/// The block layer's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors from setting up and driving the block layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The driver refused (set-up, or a request handed back by a queue pair).
    #[error(transparent)]
    Driver(#[from] nvme_driver::Error),
    /// No bdev of that name.
    #[error("no bdev named {name:?}; known bdevs: {known:?}")]
    NoSuchBdev {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// A multipath knob is out of range or inconsistent with another.
    #[error("invalid multipath option: {0}")]
    InvalidOption(String),
    /// A request that cannot be valid on this bdev (range, buffer, operation).
    #[error("invalid I/O: {0}")]
    InvalidIo(String),
    /// The channel has as many I/Os outstanding as it can track: poll, then resubmit.
    #[error("channel busy: {0} I/Os outstanding, the channel's limit; poll for completions and resubmit")]
    Busy(usize),
    /// A bounded resource (reader slots, paths, message ring) is used up.
    #[error("resource exhausted: {0}")]
    Exhausted(String),
    /// A path that does not belong with this bdev: the namespace it reaches has
    /// another geometry.
    #[error("path mismatch: {0}")]
    PathMismatch(String),
    /// No controller of that name is attached.
    #[error("no controller named {name:?} is attached; attached controllers: {known:?}")]
    NoSuchController {
        /// The name asked for.
        name: String,
        /// The names of the attached controllers.
        known: Vec<String>,
    },
    /// A controller of that name is attached already.
    #[error("a controller named {0:?} is already attached")]
    DuplicateController(String),
    /// A path of that instance is in the bdev's path set already.
    #[error("duplicate path: {0}")]
    DuplicatePath(String),
    /// The reactors or the block layer are stopping or stopped.
    #[error("stopped: {0}")]
    Stopped(String),
    /// An operating-system failure while setting up (threads).
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

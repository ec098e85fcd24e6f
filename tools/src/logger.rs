// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The tools' logger: the driver's and the block layer's messages (through the `log`
//! crate) printed on standard error, one line each, as the library printed them
//! before it logged.

/// Prints each record's message on standard error.
#[derive(Debug)]
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Sends the library's log messages to standard error. Call once, first thing in
/// `main`; later calls (or another logger set first) change nothing.
pub fn install_stderr_logger() {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Lets debug messages through too (spdk_nvme_perf's `-G`, spdk_nvme_identify's `-L`).
pub fn enable_debug() {
    log::set_max_level(log::LevelFilter::Debug);
}

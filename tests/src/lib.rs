//! End-to-end test harness: boots a QEMU topology and runs commands in the guest.

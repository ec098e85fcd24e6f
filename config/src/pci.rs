// SPDX-License-Identifier: Apache-2.0 OR MIT
//! PCI addresses, as SPDK's configs and transport IDs write them.

/// Parses a PCI address `DDDD:BB:DD.F` or `BB:DD.F`, with `:` or `.` separators,
/// into its full form. `None` if it is not one.
pub fn parse_bdf(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '.']).collect();
    let (dom, rest) = match parts.len() {
        4 => (parts[0], &parts[1..]),
        3 => ("0", &parts[..]),
        _ => return None,
    };
    let hex = |p: &str, width: usize, max: u32| -> Option<u32> {
        if p.is_empty() || p.len() > width || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(p, 16).ok().filter(|v| *v <= max)
    };
    let d = hex(dom, 4, 0xffff)?;
    let b = hex(rest[0], 2, 0xff)?;
    let dev = hex(rest[1], 2, 0x1f)?;
    let func = hex(rest[2], 1, 7)?;
    Some(format!("{d:04x}:{b:02x}:{dev:02x}.{func:x}"))
}

// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Core masks as SPDK takes them: `-c 0x3` (hexadecimal, with or without `0x`) or a
//! list `-c [0,2-3]`.

use crate::{usage, UsageError};

/// The cores this process may run on (its affinity), sorted.
pub fn available_cores() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if v.is_empty() {
        v.push(0);
    }
    v.sort_unstable();
    v
}

/// Parses a core mask and checks every core it names is in `available`.
/// Returns the cores, sorted.
pub fn parse_core_mask(s: &str, available: &[usize]) -> Result<Vec<usize>, UsageError> {
    let t = s.trim();
    let mut cores = Vec::new();
    if let Some(list) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        for item in list.split(',') {
            let item = item.trim();
            let bad = || usage!("-c {s}: '{item}' is not a core number or range like 2-3");
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<usize>().map_err(|_| bad())?,
                    b.trim().parse::<usize>().map_err(|_| bad())?,
                ),
                None => {
                    let n = item.parse::<usize>().map_err(|_| bad())?;
                    (n, n)
                }
            };
            if lo > hi || hi >= 1024 {
                return Err(bad());
            }
            cores.extend(lo..=hi);
        }
    } else {
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if hex.is_empty() || hex.len() > 256 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(usage!(
                "-c {s}: not a core mask; give hexadecimal like 0x3 or a list like [0,1]"
            ));
        }
        for (i, c) in hex.chars().rev().enumerate() {
            let d = c.to_digit(16).expect("checked to be a hex digit");
            for bit in 0..4 {
                if d >> bit & 1 == 1 {
                    cores.push(i * 4 + bit);
                }
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(usage!(
            "-c {s}: the mask names no core; give at least one, e.g. 0x1"
        ));
    }
    let missing: Vec<String> = cores
        .iter()
        .filter(|c| !available.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(usage!(
            "-c {s}: core {} not available on this machine (available: {})",
            missing.join(","),
            format_core_list(available)
        ));
    }
    Ok(cores)
}

/// Formats cores as SPDK's list form, `0-3,6`.
pub fn format_core_list(cores: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cores[i].to_string()
        } else {
            format!("{}-{}", cores[i], cores[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_lists() {
        let avail = [0, 1, 2, 3];
        assert_eq!(parse_core_mask("0x1", &avail).unwrap(), vec![0]);
        assert_eq!(parse_core_mask("0x3", &avail).unwrap(), vec![0, 1]);
        assert_eq!(parse_core_mask("c", &avail).unwrap(), vec![2, 3]);
        assert_eq!(parse_core_mask("[0,2-3]", &avail).unwrap(), vec![0, 2, 3]);
        assert_eq!(parse_core_mask("[1, 1]", &avail).unwrap(), vec![1]);
    }

    #[test]
    fn bad_masks_say_what_to_fix() {
        let avail = [0, 1];
        let e = parse_core_mask("0x4", &avail).unwrap_err().0;
        assert!(
            e.contains("core 2 not available") && e.contains("available: 0-1"),
            "{e}"
        );
        assert!(parse_core_mask("0x0", &avail)
            .unwrap_err()
            .0
            .contains("names no core"));
        assert!(parse_core_mask("0xg", &avail)
            .unwrap_err()
            .0
            .contains("not a core mask"));
        assert!(parse_core_mask("", &avail).is_err());
        assert!(parse_core_mask("[3-1]", &avail)
            .unwrap_err()
            .0
            .contains("'3-1'"));
        assert!(parse_core_mask("[a]", &avail).is_err());
    }

    #[test]
    fn core_lists_collapse_ranges() {
        assert_eq!(format_core_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(format_core_list(&[5]), "5");
    }
}

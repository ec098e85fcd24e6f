// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-bench-chart's command line: its table (`--help`, the man page and the bash
//! completion are made of it, [`crate::manual`]) and its parser.

use crate::manual::{Manual, Opt};
use crate::{usage, UsageError};

/// One-line usage.
pub const USAGE: &str = "usage: nvme-bench-chart RESULTS.json [OUT.svg]";

/// The file names it completes.
const FILES: &[&str] = &["FILE"];

/// The arguments and options.
pub const OPTIONS: &[Opt] = &[
    Opt::new(
        None,
        None,
        Some("RESULTS.json"),
        &["qemu/bench's results (its JSON document)"],
    )
    .choices(FILES),
    Opt::new(
        None,
        None,
        Some("OUT.svg"),
        &["the picture to write (default: RESULTS.svg next to the JSON)"],
    )
    .choices(FILES),
    Opt::new(Some('h'), Some("help"), None, &["this text"]),
];

/// nvme-bench-chart's manual.
pub const MANUAL: Manual = Manual {
    name: "nvme-bench-chart",
    summary: "draw qemu/bench's results as an SVG chart",
    usage: USAGE,
    description: "\
Draws qemu/bench's median IOPS and p99 latency per engine and workload: two grouped bar
charts, one group per workload and one bar colour per engine, into an SVG picture, and
prints the picture's file name.

Exit status: 0 on success, 1 when the results cannot be read or the picture written,
2 for a usage error.
",
    options: OPTIONS,
    head_width: 14,
    variables: &[],
    variables_intro: "",
    notes: "",
};

/// The results to read and the picture to write; `Ok(None)` asks for help.
pub fn parse_args(args: &[String]) -> Result<Option<(String, String)>, UsageError> {
    let mut files = Vec::new();
    for a in args {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            o if o.starts_with('-') => return Err(usage!("unknown option {o}")),
            f => files.push(f.to_string()),
        }
    }
    match files.as_slice() {
        [i] => Ok(Some((
            i.clone(),
            std::path::Path::new(i)
                .with_extension("svg")
                .display()
                .to_string(),
        ))),
        [i, o] if o.ends_with(".svg") => Ok(Some((i.clone(), o.clone()))),
        [_, o] => Err(usage!("{o}: the chart is SVG; name it OUT.svg")),
        _ => Err(usage!("give the results JSON, and optionally OUT.svg")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Option<(String, String)>, UsageError> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// The arguments as before, every option parses, and each is in the man page
    /// (rendered without warnings), the bash completion (loaded by bash) and `--help`.
    #[test]
    fn every_option_is_parsed_and_documented() {
        assert_eq!(
            parse(&["r.json"]).unwrap(),
            Some(("r.json".into(), "r.svg".into()))
        );
        assert_eq!(
            parse(&["r.json", "o.svg"]).unwrap(),
            Some(("r.json".into(), "o.svg".into()))
        );
        assert!(parse(&["r.json", "o.png"])
            .unwrap_err()
            .0
            .contains("the chart is SVG"));
        assert!(parse(&[]).unwrap_err().0.contains("give the results JSON"));
        assert!(parse(&["-x"]).unwrap_err().0.contains("unknown option -x"));
        let mut accepted = Vec::new();
        for o in OPTIONS {
            for name in o.names() {
                assert_eq!(parse(&[&name]).unwrap(), None, "{name}");
                accepted.push(name);
            }
        }
        crate::manual::check::documents(&MANUAL, &accepted);
        // The arguments are files: the completion offers them.
        let dir = std::env::temp_dir().join(format!("nvme-chart-complete-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("results.json");
        std::fs::write(&f, "{}").unwrap();
        let prefix = dir.join("res").display().to_string();
        let offered = crate::manual::check::bash_offers(&MANUAL, &[&prefix]);
        assert_eq!(offered, [f.display().to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

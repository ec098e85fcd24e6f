// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The tools' manuals: one table of options per tool, and what is made from it, the
//! `--help` list, a man page (section 1, roff `man` macros) and a bash completion
//! script. The parsers take their option names from the same table (or their tests
//! check that they accept exactly its options), so the three cannot drift from what
//! the tool accepts.
//!
//! Each binary answers `--print-man` and `--print-completion bash` (hidden options,
//! checked before its parser runs); `tools/install-docs PREFIX` installs the results.

use std::fmt::Write as _;

/// One option (its short and long names, the name of its value, its help lines), or
/// one word: a command (`status`) or a variable (`HUGEMEM`).
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// `status`, `HUGEMEM`: a command or variable, in place of option names.
    pub word: Option<&'static str>,
    /// `-q`.
    pub short: Option<char>,
    /// `--io-depth` (without the dashes).
    pub long: Option<&'static str>,
    /// The value's name (`DEPTH`), if the option takes one.
    pub value: Option<&'static str>,
    /// The words completion offers for the value (empty: none; `FILE`: file names).
    pub choices: &'static [&'static str],
    /// The help, as `--help` prints it: one entry per line.
    pub help: &'static [&'static str],
    /// Accepted but left out of `--help` and the completion (it is in the man page).
    pub hidden: bool,
}

impl Opt {
    /// An option with a short and a long name.
    pub const fn new(
        short: Option<char>,
        long: Option<&'static str>,
        value: Option<&'static str>,
        help: &'static [&'static str],
    ) -> Opt {
        Opt {
            word: None,
            short,
            long,
            value,
            choices: &[],
            help,
            hidden: false,
        }
    }

    /// A command (`status`, with `[--json]` after it) or a variable (`HUGEMEM`).
    pub const fn word(
        word: &'static str,
        value: Option<&'static str>,
        help: &'static [&'static str],
    ) -> Opt {
        Opt {
            word: Some(word),
            short: None,
            long: None,
            value,
            choices: &[],
            help,
            hidden: false,
        }
    }

    /// The same option, completing its value from `choices`.
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Opt {
        self.choices = choices;
        self
    }

    /// The same option, left out of `--help` and the completion.
    pub const fn hidden(mut self) -> Opt {
        self.hidden = true;
        self
    }

    /// `-q, --io-depth DEPTH`, as `--help` heads it.
    fn head(&self) -> String {
        let names = match (self.word, self.short, self.long) {
            (Some(w), _, _) => w.to_string(),
            (None, Some(c), Some(l)) => format!("-{c}, --{l}"),
            (None, Some(c), None) => format!("-{c}"),
            (None, None, Some(l)) => format!("    --{l}"),
            // An argument, not an option: its value's name alone.
            (None, None, None) => return self.value.unwrap_or_default().to_string(),
        };
        match self.value {
            Some(v) => format!("{names} {v}"),
            None => names,
        }
    }

    /// Every spelling: `-q` and `--io-depth`.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.word.iter().map(|w| w.to_string()).collect();
        if let Some(c) = self.short {
            out.push(format!("-{c}"));
        }
        if let Some(l) = self.long {
            out.push(format!("--{l}"));
        }
        out
    }
}

/// A tool's manual.
#[derive(Debug, Clone, Copy)]
pub struct Manual {
    /// The program name.
    pub name: &'static str,
    /// What it is, in a line (the man page's NAME).
    pub summary: &'static str,
    /// The usage lines (`usage: ` first, as `--help` prints them).
    pub usage: &'static str,
    /// The man page's DESCRIPTION: paragraphs separated by blank lines.
    pub description: &'static str,
    /// The options (or commands).
    pub options: &'static [Opt],
    /// Variables read from the environment or `NAME=VALUE` arguments.
    pub variables: &'static [Opt],
    /// The line `--help` prints above the variables.
    pub variables_intro: &'static str,
    /// Width of the option heads in `--help` (longer heads put the help on the next line).
    pub head_width: usize,
    /// Text after the option list in `--help` (and a NOTES section in the man page).
    pub notes: &'static str,
}

impl Manual {
    /// The option list `--help` prints, from the table.
    pub fn help(&self) -> String {
        let mut out = self.entries(self.options);
        if !self.variables.is_empty() {
            out.push('\n');
            out.push_str(self.variables_intro);
            out.push_str(&self.entries(self.variables));
        }
        out.push_str(self.notes);
        out
    }

    /// `--help`'s lines for `opts`: the head, then the help from column
    /// `head_width + 3` (on the next line when the head is wider).
    fn entries(&self, opts: &[Opt]) -> String {
        let mut out = String::new();
        let indent = " ".repeat(2 + self.head_width + 1);
        for o in opts.iter().filter(|o| !o.hidden) {
            let head = o.head();
            let mut lines = o.help.iter();
            if head.len() > self.head_width {
                let _ = writeln!(out, "  {head}");
            } else if let Some(first) = lines.next() {
                let _ = writeln!(out, "  {head:<w$} {first}", w = self.head_width);
            }
            for l in lines {
                let _ = writeln!(out, "{indent}{l}");
            }
        }
        out
    }

    /// The man page, section 1, in roff with the `man` macros.
    pub fn man_page(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            ".TH {} 1 \"\" \"nvme-tools {}\" \"User Commands\"",
            roff(&self.name.to_uppercase()),
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            ".SH NAME\n{} \\- {}",
            roff(self.name),
            roff(self.summary)
        );
        // Each usage line a paragraph of its own, filled (they are long).
        out.push_str(".SH SYNOPSIS\n");
        for l in self.usage.lines() {
            let l = l.trim_start().trim_start_matches("usage: ");
            let _ = writeln!(out, ".PP\n{}", roff_line(l));
        }
        out.push_str(".SH DESCRIPTION\n");
        paragraphs(&mut out, self.description);
        let commands = self.options.iter().any(|o| o.word.is_some());
        out.push_str(if commands {
            ".SH COMMANDS\n"
        } else {
            ".SH OPTIONS\n"
        });
        man_entries(&mut out, self.options);
        if !self.variables.is_empty() {
            out.push_str(".SH ENVIRONMENT\n");
            paragraphs(&mut out, self.variables_intro);
            man_entries(&mut out, self.variables);
        }
        if !self.notes.trim().is_empty() {
            out.push_str(".SH NOTES\n");
            paragraphs(&mut out, self.notes);
        }
        out.push_str(".SH SEE ALSO\n");
        let refs: Vec<String> = TOOLS
            .iter()
            .filter(|n| **n != self.name)
            .map(|n| format!("\\fB{}\\fR(1)", roff(n)))
            .collect();
        let _ = writeln!(
            out,
            "{}; tools/README.md in the source tree",
            refs.join(", ")
        );
        out
    }

    /// A bash completion script: `source` it, or install it as
    /// `share/bash-completion/completions/NAME`. After an option that takes a value
    /// it offers the value's choices (file names for `FILE`, nothing else when it has
    /// none); elsewhere every option, command and `NAME=` of a variable.
    pub fn bash_completion(&self) -> String {
        let func = format!("_{}", self.name.replace('-', "_"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# bash completion for {0} (made by {0} --print-completion bash)",
            self.name
        );
        let _ = writeln!(out, "{func}() {{");
        out.push_str(
            "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n",
        );
        out.push_str("    case \"$prev\" in\n");
        let with_value = self
            .options
            .iter()
            .filter(|o| o.value.is_some() && !o.hidden && !o.names().is_empty());
        for o in with_value {
            let action = match o.choices {
                ["FILE"] => "COMPREPLY=($(compgen -f -- \"$cur\"))".to_string(),
                [] => "COMPREPLY=()".to_string(),
                words => format!(
                    "COMPREPLY=($(compgen -W \"{}\" -- \"$cur\"))",
                    words.join(" ")
                ),
            };
            let _ = writeln!(out, "        {}) {action}; return ;;", o.names().join("|"));
        }
        out.push_str("    esac\n");
        let mut words: Vec<String> = Vec::new();
        for o in self.options.iter().filter(|o| !o.hidden) {
            words.extend(o.names());
        }
        for v in self.variables.iter().filter(|o| !o.hidden) {
            words.extend(v.names().into_iter().map(|n| format!("{n}=")));
        }
        let _ = writeln!(
            out,
            "    COMPREPLY=($(compgen -W \"{}\" -- \"$cur\"))",
            words.join(" ")
        );
        // Arguments that are files (no option before them): file names too.
        let files = self
            .options
            .iter()
            .any(|o| o.names().is_empty() && o.choices == ["FILE"]);
        if files {
            out.push_str("    [[ $cur == -* ]] || COMPREPLY+=($(compgen -f -- \"$cur\"))\n");
        }
        // NAME= is completed without a space after it, for the value to follow.
        out.push_str(
            "    [[ ${#COMPREPLY[@]} == 1 && ${COMPREPLY[0]} == *= ]] && compopt -o nospace 2>/dev/null\n",
        );
        out.push_str("    return 0\n}\n");
        let _ = writeln!(out, "complete -F {func} {}", self.name);
        out
    }

    /// What `--print-man` and `--print-completion bash` ask for, if `args` (after the
    /// program name) is one of them; the binaries print it and exit.
    pub fn print_request(&self, args: &[String]) -> Option<Result<String, String>> {
        match args {
            [a] if a == "--print-man" => Some(Ok(self.man_page())),
            [a, shell] if a == "--print-completion" => Some(match shell.as_str() {
                "bash" => Ok(self.bash_completion()),
                other => Err(format!("--print-completion {other}: only bash is made")),
            }),
            _ => None,
        }
    }
}

/// The four tools, for SEE ALSO.
const TOOLS: &[&str] = &[
    "nvme-perf",
    "nvme-identify",
    "nvme-setup",
    "nvme-bench-chart",
];

/// `.TP` entries: the names in bold, the value in italics, the help joined.
fn man_entries(out: &mut String, opts: &[Opt]) {
    for o in opts {
        let names: Vec<String> = o
            .names()
            .iter()
            .map(|n| format!("\\fB{}\\fR", roff(n)))
            .collect();
        let value = o
            .value
            .map(|v| format!(" \\fI{}\\fR", roff(v)))
            .unwrap_or_default();
        let tag = format!("{}{value}", names.join(", "));
        let text: Vec<&str> = o.help.iter().map(|l| l.trim()).collect();
        let _ = writeln!(
            out,
            ".TP\n{}\n{}",
            tag.trim_start(),
            roff_line(&text.join(" "))
        );
    }
}

/// Text for roff: backslashes and dashes escaped.
fn roff(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// A line of text for roff: escaped, and kept from being read as a request.
fn roff_line(s: &str) -> String {
    let e = roff(s);
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

/// Paragraphs (separated by blank lines) as `.PP` blocks; indented lines stay as
/// they are (`.nf`).
fn paragraphs(out: &mut String, text: &str) {
    for para in text.trim().split("\n\n") {
        let literal = para.lines().all(|l| l.starts_with("  "));
        if literal {
            out.push_str(".PP\n.nf\n");
            for l in para.lines() {
                let _ = writeln!(out, "{}", roff_line(l));
            }
            out.push_str(".fi\n");
        } else {
            let joined = para.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, ".PP\n{}", roff_line(&joined));
        }
    }
}

impl Manual {
    /// Answers `--print-man` and `--print-completion bash` (the only argument given):
    /// prints the text and exits. Anything else returns, for the tool's parser.
    pub fn serve(&self) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match self.print_request(&args) {
            None => {}
            Some(Ok(text)) => {
                print!("{text}");
                std::process::exit(0)
            }
            Some(Err(e)) => crate::exit_usage(self.name, &crate::UsageError(e)),
        }
    }
}

/// Checks shared by the tools' tests: the man page renders without warnings and
/// names every option, and bash loads the completion and offers every option.
#[cfg(test)]
pub(crate) mod check {
    use super::Manual;
    use std::path::PathBuf;
    use std::process::Command;

    /// A file in a folder of its own under the temporary directory.
    fn temp_file(m: &Manual, ext: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nvme-manual-{}-{}-{ext}",
            m.name,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let f = dir.join(format!("{}.{ext}", m.name));
        std::fs::write(&f, text).expect("write the temporary file");
        f
    }

    /// Runs a program; its stdout and stderr, or a panic naming the package to install.
    fn run(cmd: &mut Command, package: &str) -> (String, String) {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e}; install {package} (apt-get install {package}; .ci/run does)")
        });
        assert!(out.status.success(), "{cmd:?} failed: {out:?}");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The man page rendered by groff with every warning on (`-ww`) and by `man -l`;
    /// panics on any warning. Returns the groff rendering.
    pub(crate) fn man_renders(m: &Manual) -> String {
        let f = temp_file(m, "1", &m.man_page());
        // -P-cbou: plain text, no overstrikes for bold and underline.
        let (text, warnings) = run(
            Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
                .arg(&f),
            "groff-base",
        );
        assert!(
            warnings.is_empty(),
            "groff warns about {}'s man page:\n{warnings}",
            m.name
        );
        let (_, warnings) = run(
            Command::new("man")
                .args(["--warnings", "-l"])
                .arg(&f)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80"),
            "man-db",
        );
        assert!(
            warnings.is_empty(),
            "man -l warns about {}'s man page:\n{warnings}",
            m.name
        );
        text
    }

    /// What bash's completion offers after `words` (the word being completed last),
    /// with the completion script loaded as bash-completion would load it. Also checks
    /// that `complete -p NAME` names the function.
    pub(crate) fn bash_offers(m: &Manual, words: &[&str]) -> Vec<String> {
        let f = temp_file(m, "bash", &m.bash_completion());
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let script = format!(
            "source '{}' || exit 3; complete -p {} || exit 4; COMP_WORDS=({} {}); COMP_CWORD={}; _{}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            f.display(),
            m.name,
            m.name,
            quoted.join(" "),
            words.len(),
            m.name.replace('-', "_")
        );
        let (out, err) = run(Command::new("bash").args(["--norc", "-c", &script]), "bash");
        assert!(
            err.is_empty(),
            "bash complains about {}'s completion:\n{err}",
            m.name
        );
        let mut lines = out.lines();
        let spec = lines.next().unwrap_or_default();
        assert_eq!(
            spec,
            format!("complete -F _{} {}", m.name.replace('-', "_"), m.name),
            "complete -p {}",
            m.name
        );
        lines.map(String::from).collect()
    }

    /// Every option the parser accepts (`accepted`, every spelling) is in the man page
    /// (as rendered), and every one not hidden is offered by the completion and listed
    /// by `--help`.
    pub(crate) fn documents(m: &Manual, accepted: &[String]) {
        let page = man_renders(m);
        // groff's UTF-8 output may print hyphens and minus signs as U+2010 and U+2212.
        let page = page.replace(['\u{2010}', '\u{2212}'], "-");
        let offered = bash_offers(m, &[""]);
        let help = m.help();
        for name in accepted {
            assert!(
                page.split(|c: char| c.is_whitespace() || c == ',')
                    .any(|w| w == name),
                "{name} is accepted by {} but missing from its man page",
                m.name
            );
            let mut all = m.options.iter().chain(m.variables);
            let opt = all.find(|o| o.names().contains(name));
            if opt.is_some_and(|o| o.hidden) {
                continue;
            }
            assert!(
                offered.contains(name) || offered.contains(&format!("{name}=")),
                "{name} is accepted by {} but its bash completion does not offer it: {offered:?}",
                m.name
            );
            assert!(
                help.contains(name.as_str()),
                "{name} is not in {}'s --help",
                m.name
            );
        }
    }
}

//! Command-line options: a table per command, parsed with lexopt, each option optionally
//! mirrored by a `MOTE_*` environment variable. `--help` is generated from the table and
//! shows every default and variable.

use std::ffi::OsString;
use std::fmt;

/// One option of a command.
pub(crate) struct Opt {
    pub(crate) long: &'static str,
    pub(crate) short: Option<char>,
    /// Placeholder of the value, or `None` for a switch.
    pub(crate) value: Option<&'static str>,
    pub(crate) env: Option<&'static str>,
    pub(crate) default: Option<&'static str>,
    pub(crate) help: &'static str,
}

/// What a command accepts.
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) opts: &'static [Opt],
    /// Extra text after the options (examples).
    pub(crate) after: &'static str,
}

/// A command line that cannot be used, with a message saying why.
#[derive(Debug)]
pub(crate) struct CliError(pub(crate) String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> Self {
        CliError(e.to_string())
    }
}

/// The result of parsing: values in command-line order.
pub(crate) struct Parsed {
    spec: &'static Spec,
    /// Arguments that are not options, in order (only with [`parse_positional`]).
    pub(crate) positional: Vec<String>,
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
    /// Values from a config file: below flags and variables, above defaults.
    config: Vec<(&'static str, String)>,
}

/// Parsing ended with `--help`: print this and exit 0.
pub(crate) enum Outcome {
    Run(Parsed),
    Help(String),
}

pub(crate) fn parse(
    spec: &'static Spec,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Outcome, CliError> {
    parse_hinted(spec, args, &[])
}

/// An option another tool has and mote has not (such as mosquitto_pub's `-u`), and what to
/// type instead: shown in place of "unknown option".
pub(crate) struct Hint {
    /// As typed: `-u`, `--username`.
    pub(crate) names: &'static [&'static str],
    pub(crate) hint: &'static str,
}

/// As [`parse_hinted`], keeping arguments that are not options in
/// [`Parsed::positional`] (a command's subjects: `mote topic info TOPIC`).
pub(crate) fn parse_positional(
    spec: &'static Spec,
    args: impl IntoIterator<Item = OsString>,
    hints: &[Hint],
) -> Result<Outcome, CliError> {
    parse_all(spec, args, hints, true)
}

/// As [`parse`], answering an unknown option that is in `hints` with its hint.
pub(crate) fn parse_hinted(
    spec: &'static Spec,
    args: impl IntoIterator<Item = OsString>,
    hints: &[Hint],
) -> Result<Outcome, CliError> {
    parse_all(spec, args, hints, false)
}

fn parse_all(
    spec: &'static Spec,
    args: impl IntoIterator<Item = OsString>,
    hints: &[Hint],
    positional: bool,
) -> Result<Outcome, CliError> {
    use lexopt::Arg;
    let mut p = lexopt::Parser::from_args(args);
    let mut out = Parsed {
        positional: Vec::new(),
        spec,
        values: Vec::new(),
        switches: Vec::new(),
        config: Vec::new(),
    };
    while let Some(arg) = p.next()? {
        let opt = match &arg {
            Arg::Long("help") => return Ok(Outcome::Help(help(spec))),
            Arg::Long(l) => spec.opts.iter().find(|o| o.long == *l),
            Arg::Short(c) => spec.opts.iter().find(|o| o.short == Some(*c)),
            Arg::Value(v) if positional => {
                let v = v.clone().into_string().map_err(|v| {
                    CliError(format!("{:?} must be valid UTF-8", v.to_string_lossy()))
                })?;
                out.positional.push(v);
                continue;
            }
            Arg::Value(v) => {
                return Err(CliError(format!(
                    "unexpected argument {:?} (see mote {} --help)",
                    v.to_string_lossy(),
                    spec.name
                )));
            }
        };
        let Some(opt) = opt else {
            let shown = match arg {
                Arg::Long(l) => format!("--{l}"),
                Arg::Short(c) => format!("-{c}"),
                Arg::Value(_) => String::new(),
            };
            if let Some(h) = hints.iter().find(|h| h.names.contains(&shown.as_str())) {
                return Err(CliError(format!("{shown}: {}", h.hint)));
            }
            return Err(CliError(format!(
                "unknown option {shown} (see mote {} --help)",
                spec.name
            )));
        };
        if opt.value.is_some() {
            let v = p.value().map_err(|_| {
                CliError(format!(
                    "--{} needs a value ({})",
                    opt.long,
                    opt.value.unwrap_or("")
                ))
            })?;
            let v = v
                .into_string()
                .map_err(|_| CliError(format!("--{} must be valid UTF-8", opt.long)))?;
            out.values.push((opt.long, v));
        } else {
            out.switches.push(opt.long);
        }
    }
    Ok(Outcome::Run(out))
}

impl Parsed {
    /// The command's name, for messages.
    pub(crate) fn spec_name(&self) -> &'static str {
        self.spec.name
    }

    fn opt(&self, long: &str) -> &'static Opt {
        self.spec
            .opts
            .iter()
            .find(|o| o.long == long)
            .unwrap_or_else(|| panic!("option --{long} is not in the table of {}", self.spec.name))
    }

    /// The value of `--long`: the last one given, else its variable, else its default.
    pub(crate) fn get(&self, long: &str) -> Option<String> {
        let opt = self.opt(long);
        if let Some((_, v)) = self.values.iter().rev().find(|(l, _)| *l == long) {
            return Some(v.clone());
        }
        if let Some(v) = opt.env.and_then(|e| std::env::var(e).ok()) {
            return Some(v);
        }
        if let Some((_, v)) = self.config.iter().find(|(l, _)| *l == long) {
            return Some(v.clone());
        }
        opt.default.map(str::to_owned)
    }

    /// Reads a TOML file whose keys are the command's long option names (`tcp = ...`,
    /// `max-payload = "1M"`, `ring-messages = 10000`). `sections` are tables the caller
    /// reads itself; anything else unknown is an error naming it.
    pub(crate) fn load_config(
        &mut self,
        path: &str,
        sections: &[&str],
    ) -> Result<toml::Table, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError(format!("cannot read config file {path}: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| CliError(format!("config file {path}: {e}")))?;
        self.config.clear();
        let mut rest = toml::Table::new();
        for (key, value) in table {
            if sections.contains(&key.as_str()) {
                rest.insert(key, value);
                continue;
            }
            let Some(opt) = self.spec.opts.iter().find(|o| o.long == key) else {
                return Err(CliError(format!(
                    "config file {path}: unknown key {key:?} (keys are the long options of mote {} --help)",
                    self.spec.name
                )));
            };
            let v = match (&value, opt.value) {
                (toml::Value::String(s), Some(_)) => s.clone(),
                (toml::Value::Integer(i), Some(_)) => i.to_string(),
                (toml::Value::Float(f), Some(_)) => f.to_string(),
                (toml::Value::Boolean(b), None) => {
                    if *b {
                        self.switches.push(opt.long);
                    }
                    continue;
                }
                _ => {
                    return Err(CliError(format!(
                        "config file {path}: {key} must be {}",
                        if opt.value.is_some() {
                            "a string or a number"
                        } else {
                            "true or false"
                        }
                    )));
                }
            };
            self.config.push((opt.long, v));
        }
        Ok(rest)
    }

    /// Every value given for a repeatable `--long`, or its variable's or default if none.
    pub(crate) fn all(&self, long: &str) -> Vec<String> {
        let v: Vec<String> = self
            .values
            .iter()
            .filter(|(l, _)| *l == long)
            .map(|(_, v)| v.clone())
            .collect();
        if v.is_empty() {
            self.get(long).into_iter().collect()
        } else {
            v
        }
    }

    /// Whether the switch `--long` is on (given, or its variable is `1`/`true`/`yes`).
    pub(crate) fn on(&self, long: &str) -> bool {
        let opt = self.opt(long);
        self.switches.contains(&long)
            || opt
                .env
                .and_then(|e| std::env::var(e).ok())
                .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on"))
    }

    /// Parses the value of `--long` with `f`, naming the option (and where the value came
    /// from) when it is invalid.
    pub(crate) fn parse_with<T>(
        &self,
        long: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CliError> {
        let Some(v) = self.get(long) else {
            return Ok(None);
        };
        f(&v).map(Some).map_err(|e| {
            let src = match (self.source(long), self.opt(long).env) {
                (Source::Env, Some(env)) => format!("{env} (--{long})"),
                (Source::Config, _) => format!("{long} in the config file"),
                _ => format!("--{long}"),
            };
            CliError(format!("invalid value {v:?} for {src}: {e}"))
        })
    }

    /// Where the value of `--long` comes from.
    pub(crate) fn source(&self, long: &str) -> Source {
        let opt = self.opt(long);
        if self.values.iter().any(|(l, _)| *l == long) || self.switches.contains(&long) {
            Source::Line
        } else if opt.env.is_some_and(|e| std::env::var(e).is_ok()) {
            Source::Env
        } else if self.config.iter().any(|(l, _)| *l == long) {
            Source::Config
        } else {
            Source::Default
        }
    }

    /// The `MOTE_*` variable of `--long`, if it has one.
    pub(crate) fn opt_env(&self, long: &str) -> Option<&'static str> {
        self.opt(long).env
    }

    /// How to name `--long` to the user: as the flag, variable or config key that set it.
    pub(crate) fn named(&self, long: &str) -> String {
        match (self.source(long), self.opt(long).env) {
            (Source::Env, Some(env)) => env.to_string(),
            (Source::Config, _) => format!("{long} in the config file"),
            _ => format!("--{long}"),
        }
    }

    /// The token from `--token` or from the file `--token-file` names (not both), as
    /// written (the caller reads the `NAME:` in it or not), and where it came from, to
    /// name in errors.
    pub(crate) fn token(&self) -> Result<Option<(String, String)>, CliError> {
        match (self.get("token"), self.get("token-file")) {
            (Some(_), Some(_)) => Err(CliError(format!(
                "{} and {} are both set: give the token one way (--token-file keeps it out of ps)",
                self.named("token"),
                self.named("token-file")
            ))),
            (Some(t), None) => Ok(Some((t, self.named("token")))),
            (None, Some(path)) => {
                let from = format!("the token file {path} ({})", self.named("token-file"));
                Ok(Some((read_token_file(&path, &from)?, from)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Where an option's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Line,
    Env,
    Config,
    Default,
}

/// Most bytes read from a token file: a token is tens of bytes, so anything larger is
/// the wrong file.
const MAX_TOKEN_FILE: u64 = 4096;

/// Reads a token from `path`, trimming the whitespace around it (a trailing newline).
/// `from` names the file and its option in errors, which never show what it holds.
pub(crate) fn read_token_file(path: &str, from: &str) -> Result<String, CliError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| CliError(format!("cannot read {from}: {e}")))?;
    let write_it = "write the token in it (make one with `mote token new`)";
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(CliError(format!(
            "{from} is larger than {MAX_TOKEN_FILE} bytes, not a token: {write_it}"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError(format!("{from} is not text: {write_it}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError(format!("{from} is empty: {write_it}")));
    }
    Ok(token.to_string())
}

/// Help text generated from the table.
pub(crate) fn help(spec: &Spec) -> String {
    let mut s = format!(
        "{}\n\nUsage: mote {} [OPTIONS]\n\nOptions:\n",
        spec.about, spec.name
    );
    let left = |o: &Opt| {
        let short = o.short.map_or("    ".to_string(), |c| format!("-{c}, "));
        match o.value {
            Some(v) => format!("{short}--{} {v}", o.long),
            None => format!("{short}--{}", o.long),
        }
    };
    let width = spec
        .opts
        .iter()
        .map(|o| left(o).len())
        .max()
        .unwrap_or(0)
        .max(10);
    for o in spec.opts {
        let mut extra = Vec::new();
        if let Some(d) = o.default {
            extra.push(format!("default: {d}"));
        }
        if let Some(e) = o.env {
            extra.push(format!("env: {e}"));
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" [{}]", extra.join(", "))
        };
        s.push_str(&format!("  {:width$}  {}{extra}\n", left(o), o.help));
    }
    s.push_str(&format!("  {:width$}  print this help\n", "    --help"));
    if !spec.after.is_empty() {
        s.push('\n');
        s.push_str(spec.after);
        if !spec.after.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

pub(crate) use mote::units::{parse_duration, parse_size};

/// Parses a plain count.
pub(crate) fn parse_count(s: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected a whole number".to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    static SPEC: Spec = Spec {
        name: "t",
        about: "test",
        opts: &[
            Opt {
                long: "topic",
                short: Some('t'),
                value: Some("TOPIC"),
                env: None,
                default: None,
                help: "a topic",
            },
            Opt {
                long: "verbose",
                short: Some('v'),
                value: None,
                env: None,
                default: None,
                help: "more",
            },
            Opt {
                long: "port",
                short: Some('p'),
                value: Some("PORT"),
                env: None,
                default: Some("7270"),
                help: "port",
            },
        ],
        after: "",
    };

    fn run(args: &[&str]) -> Result<Parsed, CliError> {
        match parse(&SPEC, args.iter().map(OsString::from))? {
            Outcome::Run(p) => Ok(p),
            Outcome::Help(_) => Err(CliError("help".into())),
        }
    }

    #[test]
    fn options_repeat_and_default() {
        let p = run(&["-t", "a", "--topic", "b", "-v"]).unwrap();
        assert_eq!(p.all("topic"), vec!["a", "b"]);
        assert_eq!(p.get("topic").as_deref(), Some("b"));
        assert!(p.on("verbose"));
        assert_eq!(p.get("port").as_deref(), Some("7270"));
        assert_eq!(p.parse_with("port", parse_count).unwrap(), Some(7270));
    }

    #[test]
    fn token_files_are_trimmed_and_bounded() {
        let dir = std::env::temp_dir().join(format!("mote-args-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t");
        let path = file.to_str().unwrap();
        std::fs::write(&file, " \tname:secret-0123456789abcdef\r\n\n").unwrap();
        assert_eq!(
            read_token_file(path, "F").unwrap(),
            "name:secret-0123456789abcdef"
        );
        std::fs::write(&file, "x".repeat(4097)).unwrap();
        let e = read_token_file(path, "F").unwrap_err().0;
        assert_eq!(
            e,
            "F is larger than 4096 bytes, not a token: write the token in it (make one with `mote token new`)"
        );
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(
            read_token_file(path, "F")
                .unwrap_err()
                .0
                .starts_with("F is not text")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(
            run(&["--nope"]).err().unwrap().0,
            "unknown option --nope (see mote t --help)"
        );
        assert!(
            run(&["-t"])
                .err()
                .unwrap()
                .0
                .contains("--topic needs a value")
        );
        let p = run(&["-p", "x"]).unwrap();
        let e = p.parse_with("port", parse_count).err().unwrap();
        assert_eq!(
            e.0,
            "invalid value \"x\" for --port: expected a whole number"
        );
        let h = help(&SPEC);
        assert!(h.contains("-p, --port PORT"), "{h}");
        assert!(h.contains("[default: 7270]"), "{h}");
    }
}

//! `--memory`, `--ring-bytes`, `--max-payload` and `--max-partial`: the sizes that must fit
//! inside each other. Those not given are derived from those given, so shrinking one
//! (`--memory 1M`) needs no other; those given are checked together, and every conflict
//! among them is reported in one message. A value from a `MOTE_*` variable or the config
//! file counts as given.
//!
//! The rules (with nothing given they are today's defaults: 64M, 8M, 1M, 16M):
//! - `--memory`: 64M, or more if a given `--ring-bytes` or `--max-payload` needs it;
//! - `--ring-bytes`: 8M or an eighth of `--memory`, the smaller, but room for one message
//!   of a given `--max-payload`;
//! - `--max-payload`: 1M or an eighth of `--ring-bytes`, the smaller (and what a given
//!   `--max-partial` holds in one record);
//! - `--max-partial`: 16M or two records at `--max-payload`, the larger.

use mote::engine::ENTRY_OVERHEAD;
use mote::limits::{FRAME_OVERHEAD, Limits, RECORD_SLACK};

use super::super::args::{self, CliError, Parsed, Source};

/// A default `--ring-bytes` is at most this share of `--memory`, a default
/// `--max-payload` at most this share of `--ring-bytes`: the ratios of the plain defaults.
const SHARE: usize = 8;

/// Bytes a record holds beyond its payload.
const RECORD_EXTRA: usize = FRAME_OVERHEAD + RECORD_SLACK;

/// The four sizes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub(crate) memory: usize,
    pub(crate) ring_bytes: usize,
    pub(crate) max_payload: usize,
    pub(crate) max_partial: usize,
}

/// Each size as given, `None` where it was not.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Given {
    pub(crate) memory: Option<usize>,
    pub(crate) ring_bytes: Option<usize>,
    pub(crate) max_payload: Option<usize>,
    pub(crate) max_partial: Option<usize>,
}

impl Given {
    /// The sizes, those not given derived from those given (the module's rules).
    pub(crate) fn derive(self) -> Sizes {
        let d = Limits::default();
        let one_message = self
            .max_payload
            .map_or(0, |p| p.saturating_add(ENTRY_OVERHEAD));
        let memory = self
            .memory
            .unwrap_or_else(|| d.memory.max(self.ring_bytes.unwrap_or(0)).max(one_message));
        let ring_bytes = self
            .ring_bytes
            .unwrap_or_else(|| d.ring_bytes.min(memory / SHARE).max(one_message));
        let max_payload = self.max_payload.unwrap_or_else(|| {
            let in_partial = self
                .max_partial
                .map_or(usize::MAX, |x| x.saturating_sub(RECORD_EXTRA));
            d.max_payload.min(ring_bytes / SHARE).min(in_partial).max(1)
        });
        let max_partial = self.max_partial.unwrap_or_else(|| {
            d.max_partial_bytes
                .max(max_payload.saturating_add(RECORD_EXTRA).saturating_mul(2))
        });
        Sizes {
            memory,
            ring_bytes,
            max_payload,
            max_partial,
        }
    }

    /// Every way `s` does not fit together. `name(long)` names a given value as the user
    /// gave it; a derived one is shown with what it was derived from.
    fn conflicts(&self, s: &Sizes, name: &dyn Fn(&str) -> String) -> Vec<String> {
        let given = [
            ("memory", self.memory),
            ("ring-bytes", self.ring_bytes),
            ("max-payload", self.max_payload),
            ("max-partial", self.max_partial),
        ];
        let zeros: Vec<String> = given
            .iter()
            .filter(|(_, v)| *v == Some(0))
            .map(|(l, _)| format!("{} must be greater than 0", name(l)))
            .collect();
        if !zeros.is_empty() {
            return zeros;
        }
        let from: Vec<String> = given
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(l, _)| name(l))
            .collect();
        let show = |long: &str, g: Option<usize>, v: usize| match g {
            Some(_) => name(long),
            None if from.is_empty() => format!("--{long} ({}, its default)", size_text(v)),
            None => format!(
                "--{long} ({}, derived from {})",
                size_text(v),
                from.join(", ")
            ),
        };
        let memory = show("memory", self.memory, s.memory);
        let ring = show("ring-bytes", self.ring_bytes, s.ring_bytes);
        let payload = show("max-payload", self.max_payload, s.max_payload);
        let partial = show("max-partial", self.max_partial, s.max_partial);
        let mut out = Vec::new();
        let one_message = s.max_payload.saturating_add(ENTRY_OVERHEAD);
        // A ring derived to fit the payload can only be too large for a given memory
        // because of that payload: say so in those terms.
        let payload_vs_memory =
            self.ring_bytes.is_none() && self.max_payload.is_some() && self.memory.is_some();
        if payload_vs_memory && one_message > s.memory {
            out.push(format!(
                "{payload} must fit in {memory} with {ENTRY_OVERHEAD} bytes of overhead per message"
            ));
        } else {
            if one_message > s.ring_bytes {
                out.push(format!(
                    "{payload} must fit in {ring} with {ENTRY_OVERHEAD} bytes of overhead per message"
                ));
            }
            if s.ring_bytes > s.memory {
                out.push(format!("{ring} must not exceed {memory}"));
            }
        }
        if s.max_partial < s.max_payload.saturating_add(RECORD_EXTRA) {
            out.push(format!(
                "{partial} must hold one whole record: {payload} and {RECORD_EXTRA} bytes"
            ));
        }
        out
    }
}

/// `1M`, `128K` or bytes, as the options take them.
pub(crate) fn size_text(v: usize) -> String {
    match v {
        0 => "0".into(),
        v if v % (1 << 30) == 0 => format!("{}G", v >> 30),
        v if v % (1 << 20) == 0 => format!("{}M", v >> 20),
        v if v % (1 << 10) == 0 => format!("{}K", v >> 10),
        v => v.to_string(),
    }
}

/// The sizes `p` asks for, and a line for the log when some were derived from others.
pub(crate) fn sizes(p: &Parsed) -> Result<(Sizes, Option<String>), CliError> {
    let given = |long: &str| match p.source(long) {
        Source::Default => Ok(None),
        _ => p.parse_with(long, args::parse_size),
    };
    let g = Given {
        memory: given("memory")?,
        ring_bytes: given("ring-bytes")?,
        max_payload: given("max-payload")?,
        max_partial: given("max-partial")?,
    };
    let s = g.derive();
    let name = |long: &str| {
        let v = p.get(long).unwrap_or_default();
        match (p.source(long), p.opt_env(long)) {
            (Source::Env, Some(env)) => format!("{env}={v}"),
            (Source::Config, _) => format!("{long} = {v:?} in the config file"),
            _ => format!("--{long} {v}"),
        }
    };
    let conflicts = g.conflicts(&s, &name);
    match conflicts.len() {
        0 => {}
        1 => return Err(CliError(conflicts.concat())),
        _ => {
            return Err(CliError(format!(
                "sizes that do not fit together:\n  - {}",
                conflicts.join("\n  - ")
            )));
        }
    }
    let derived = [g.memory, g.ring_bytes, g.max_payload, g.max_partial];
    let note = (derived.iter().any(Option::is_some)
        && derived.iter().any(Option::is_none)
        && s != Given::default().derive())
    .then(|| {
        format!(
            "sizes (those not given derived from those given): memory {}, ring-bytes {}, max-payload {}, max-partial {}",
            size_text(s.memory),
            size_text(s.ring_bytes),
            size_text(s.max_payload),
            size_text(s.max_partial)
        )
    });
    Ok((s, note))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    const K: usize = 1024;
    const M: usize = 1024 * 1024;

    fn derive(memory: Option<usize>, ring: Option<usize>, payload: Option<usize>) -> Sizes {
        Given {
            memory,
            ring_bytes: ring,
            max_payload: payload,
            max_partial: None,
        }
        .derive()
    }

    #[test]
    fn nothing_given_is_the_defaults() {
        let d = Limits::default();
        assert_eq!(
            Given::default().derive(),
            Sizes {
                memory: d.memory,
                ring_bytes: d.ring_bytes,
                max_payload: d.max_payload,
                max_partial: d.max_partial_bytes,
            }
        );
    }

    #[test]
    fn defaults_follow_what_is_given() {
        let s = derive(Some(M), None, None);
        assert_eq!((s.ring_bytes, s.max_payload), (128 * K, 16 * K));
        let s = derive(None, Some(64 * K), None);
        assert_eq!((s.memory, s.max_payload), (64 * M, 8 * K));
        // Upward too: a larger payload gets a ring (and records) that hold it.
        let s = derive(None, None, Some(16 * M));
        assert_eq!(s.ring_bytes, 16 * M + ENTRY_OVERHEAD);
        assert_eq!(s.memory, 64 * M);
        assert!(s.max_partial >= 2 * (16 * M + RECORD_EXTRA));
        let s = derive(None, Some(100 * M), None);
        assert_eq!(s.memory, 100 * M);
        let s = Given {
            max_partial: Some(RECORD_EXTRA + 10 * K),
            ..Given::default()
        }
        .derive();
        assert_eq!(s.max_payload, 10 * K);
        for g in [
            derive(Some(M), None, None),
            derive(None, Some(K), None),
            derive(Some(200 * K), None, Some(100 * K)),
            derive(None, None, Some(M + 1)),
        ] {
            let l = Limits {
                memory: g.memory,
                ring_bytes: g.ring_bytes,
                max_payload: g.max_payload,
                max_partial_bytes: g.max_partial,
                ..Limits::default()
            };
            assert_eq!(l.validate(), Ok(()), "{g:?}");
        }
    }

    #[test]
    fn every_conflict_among_given_values_at_once() {
        let name = |l: &str| format!("--{l} X");
        let g = Given {
            memory: Some(M),
            ring_bytes: Some(2 * M),
            max_payload: Some(4 * M),
            max_partial: Some(M),
        };
        let c = g.conflicts(&g.derive(), &name);
        assert_eq!(
            c,
            [
                format!(
                    "--max-payload X must fit in --ring-bytes X with {ENTRY_OVERHEAD} bytes of overhead per message"
                ),
                "--ring-bytes X must not exceed --memory X".to_string(),
                format!(
                    "--max-partial X must hold one whole record: --max-payload X and {RECORD_EXTRA} bytes"
                ),
            ]
        );
        let g = Given {
            memory: Some(M),
            max_payload: Some(2 * M),
            ..Given::default()
        };
        assert_eq!(
            g.conflicts(&g.derive(), &name),
            [format!(
                "--max-payload X must fit in --memory X with {ENTRY_OVERHEAD} bytes of overhead per message"
            )]
        );
        let g = Given {
            memory: Some(0),
            ring_bytes: Some(2 * M),
            ..Given::default()
        };
        assert_eq!(
            g.conflicts(&g.derive(), &name),
            ["--memory X must be greater than 0"]
        );
        // Too small to derive anything that works: the derived value says where it came from.
        let g = Given {
            memory: Some(100),
            ..Given::default()
        };
        let c = g.conflicts(&g.derive(), &name);
        assert!(c[0].contains("derived from --memory X"), "{c:?}");
    }

    #[test]
    fn sizes_read_as_typed() {
        assert_eq!(size_text(M), "1M");
        assert_eq!(size_text(128 * K), "128K");
        assert_eq!(size_text(1000), "1000");
        assert_eq!(size_text(1 << 30), "1G");
    }
}

//! The persisted runs' options ([`PERSIST_FLAGS`], mote-bench's: the broker binary's
//! `mote bench` has none of them) and which of the runs a [`Plan`] makes.

use std::path::PathBuf;

use super::super::{Flag, Plan};
use super::SyncMode;

/// The persisted runs' names for `--only`; `gib` is made only when named.
const RUNS: [&str; 5] = ["p64b", "p1k", "confirm", "paced", "gib"];

/// The options of the persisted runs, read by [`Plan::with_persisted`].
pub const PERSIST_FLAGS: &[Flag] = &[
    Flag {
        long: "persist",
        short: None,
        value: None,
        default: None,
        help: "also make the persisted runs p64b, p1k, confirm and paced (also names for --only), each broker on a fresh data directory; gib (1 GiB on disk) only when --only names it",
    },
    Flag {
        long: "data",
        short: None,
        value: Some("DIR"),
        default: None,
        help: "make the persisted runs, their fresh data directories in DIR [default: the temp directory]",
    },
    Flag {
        long: "sync",
        short: None,
        value: Some("POLICY"),
        default: Some("1s"),
        help: "sync policy of p64b, p1k and gib, and the one confirm and paced use besides `always`: always or a duration",
    },
];

/// The persisted runs asked for.
#[derive(Debug, Clone)]
pub struct Persist {
    /// Where they make their data directories.
    pub data: PathBuf,
    /// The sync policy of the runs other than `confirm` and `paced` (which also run
    /// under `always`).
    pub sync: SyncMode,
}

impl Plan {
    /// This plan with the persisted runs that the [`PERSIST_FLAGS`] ask for: `value(long)`
    /// is an option's value (its default when it was not given), `on(long)` whether a
    /// switch is on. They are made with `--persist` or `--data`, or when `--only` names
    /// one of them.
    pub fn with_persisted(
        mut self,
        value: impl Fn(&str) -> Option<String>,
        on: impl Fn(&str) -> bool,
    ) -> Result<Plan, String> {
        let sync = SyncMode::parse(&value("sync").unwrap_or_else(|| "1s".into()))?;
        let named = self
            .only
            .as_deref()
            .is_some_and(|o| o.split(',').any(|x| RUNS.contains(&x.trim())));
        if on("persist") || value("data").is_some() || named {
            let data = value("data").map_or_else(std::env::temp_dir, PathBuf::from);
            self.persist = Some(Persist { data, sync });
        }
        Ok(self)
    }

    /// Whether the persisted run called `run` is to be made: none without
    /// [`Plan::persist`]; those `--only` names, or all but `gib` without `--only`.
    pub(crate) fn wanted_persisted(&self, run: &str) -> bool {
        if self.persist.is_none() {
            return false;
        }
        match self.only.as_deref() {
            Some(o) => o.split(',').any(|x| x.trim() == run),
            None => run != "gib",
        }
    }
}

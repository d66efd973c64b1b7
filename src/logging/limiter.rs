//! Rate limits per call site: a token bucket for each `log::warn!` / `log::info!` line in
//! the source, so a thousand peers refused for the same reason make a few lines and a count,
//! whichever call site they come through. Pure: time comes in as milliseconds.

use log::Level;

/// Lines a call site may write at once.
pub(crate) const BURST: u64 = 10;
/// After the burst, one more line per call site this often (in milliseconds).
pub(crate) const REFILL_MS: u64 = 5_000;
/// Call sites tracked at once (the broker has a few dozen): past it, a new call site takes
/// the place of one that has nothing to report, or is not limited.
const MAX_SITES: usize = 64;

/// Where a line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Site {
    /// The module path of the call.
    pub(crate) module: &'static str,
    /// The file of the call, for the summary line.
    pub(crate) file: &'static str,
    /// The line of the call.
    pub(crate) line: u32,
}

/// What to do with a line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it, after a summary of the `suppressed` lines before it when that is not 0.
    Pass {
        /// Lines from the same site dropped since the last one written.
        suppressed: u64,
    },
    /// Drop it; `first` when it is the first one since the last line written (a summary is
    /// now due: see [`Limiter::poll_summaries`]).
    Suppress {
        /// The first line suppressed since the site last wrote one.
        first: bool,
    },
}

/// Lines of one call site suppressed since the last one written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The call site.
    pub(crate) site: Site,
    /// The level of its lines.
    pub(crate) level: Level,
    /// How many were suppressed.
    pub(crate) count: u64,
}

#[derive(Debug)]
struct Bucket {
    site: Site,
    level: Level,
    /// Tokens, in milliseconds of refill (one token = [`REFILL_MS`]).
    credit: u64,
    /// When `credit` was last brought up to date.
    at_ms: u64,
    suppressed: u64,
}

impl Bucket {
    fn refill(&mut self, now_ms: u64) {
        let earned = now_ms.saturating_sub(self.at_ms);
        self.credit = (self.credit + earned).min(BURST * REFILL_MS);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Spends a token if there is one.
    fn spend(&mut self) -> bool {
        let ok = self.credit >= REFILL_MS;
        if ok {
            self.credit -= REFILL_MS;
        }
        ok
    }
}

/// Token buckets per call site.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    buckets: Vec<Bucket>,
}

impl Limiter {
    /// Decides about one line from `site` at `now_ms`.
    pub(crate) fn check(&mut self, site: Site, level: Level, now_ms: u64) -> Verdict {
        let Some(b) = self.bucket(site, level, now_ms) else {
            return Verdict::Pass { suppressed: 0 };
        };
        b.refill(now_ms);
        if b.spend() {
            Verdict::Pass {
                suppressed: std::mem::take(&mut b.suppressed),
            }
        } else {
            b.suppressed += 1;
            Verdict::Suppress {
                first: b.suppressed == 1,
            }
        }
    }

    /// Milliseconds from `now_ms` until the next summary is due, if one is pending.
    pub(crate) fn next_summary_in(&self, now_ms: u64) -> Option<u64> {
        self.buckets
            .iter()
            .filter(|b| b.suppressed > 0)
            .map(|b| {
                let credit = b.credit + now_ms.saturating_sub(b.at_ms);
                REFILL_MS.saturating_sub(credit)
            })
            .min()
    }

    /// The summaries that are due: for each call site with suppressed lines, once it has a
    /// token again (the summary spends it), or at once with `force` (at exit).
    pub(crate) fn poll_summaries(&mut self, now_ms: u64, force: bool) -> Vec<Summary> {
        let mut due = Vec::new();
        for b in self.buckets.iter_mut().filter(|b| b.suppressed > 0) {
            b.refill(now_ms);
            if b.spend() || force {
                due.push(Summary {
                    site: b.site,
                    level: b.level,
                    count: std::mem::take(&mut b.suppressed),
                });
            }
        }
        due
    }

    fn bucket(&mut self, site: Site, level: Level, now_ms: u64) -> Option<&mut Bucket> {
        let i = match self.buckets.iter().position(|b| b.site == site) {
            Some(i) => i,
            None => {
                let fresh = Bucket {
                    site,
                    level,
                    credit: BURST * REFILL_MS,
                    at_ms: now_ms,
                    suppressed: 0,
                };
                if self.buckets.len() < MAX_SITES {
                    self.buckets.push(fresh);
                    self.buckets.len() - 1
                } else {
                    // The quietest site with nothing to report: the one whose bucket is fullest.
                    let (i, _) = self
                        .buckets
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| b.suppressed == 0)
                        .max_by_key(|(_, b)| b.credit + now_ms.saturating_sub(b.at_ms))?;
                    self.buckets[i] = fresh;
                    i
                }
            }
        };
        self.buckets.get_mut(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: Site = Site {
        module: "mote::server",
        file: "src/server/mod.rs",
        line: 333,
    };
    const BLOCKED: Site = Site {
        line: 341,
        ..REFUSED
    };

    fn passes(l: &mut Limiter, site: Site, now_ms: u64) -> bool {
        matches!(l.check(site, Level::Warn, now_ms), Verdict::Pass { .. })
    }

    #[test]
    fn a_burst_passes_then_one_line_per_refill_with_the_count_before_it() {
        let mut l = Limiter::default();
        for _ in 0..BURST {
            assert_eq!(
                l.check(REFUSED, Level::Warn, 0),
                Verdict::Pass { suppressed: 0 }
            );
        }
        assert_eq!(
            l.check(REFUSED, Level::Warn, 0),
            Verdict::Suppress { first: true }
        );
        for _ in 1..1000 {
            assert_eq!(
                l.check(REFUSED, Level::Warn, REFILL_MS - 1),
                Verdict::Suppress { first: false }
            );
        }
        assert!(l.next_summary_in(REFILL_MS).is_some());
        assert_eq!(
            l.check(REFUSED, Level::Warn, REFILL_MS),
            Verdict::Pass { suppressed: 1000 }
        );
        assert_eq!(l.next_summary_in(REFILL_MS), None);
        assert!(!passes(&mut l, REFUSED, REFILL_MS));
        // A quiet site earns its whole burst back, no more.
        let later = REFILL_MS * 100;
        let passed = (0..BURST * 2).filter(|_| passes(&mut l, REFUSED, later));
        assert_eq!(passed.count() as u64, BURST);
    }

    #[test]
    fn call_sites_are_limited_separately() {
        let mut l = Limiter::default();
        for _ in 0..BURST {
            assert!(passes(&mut l, REFUSED, 0));
        }
        assert!(!passes(&mut l, REFUSED, 0));
        assert!(passes(&mut l, BLOCKED, 0));
    }

    #[test]
    fn summaries_come_when_a_token_is_back_or_at_exit() {
        let mut l = Limiter::default();
        for _ in 0..BURST + 5 {
            l.check(REFUSED, Level::Info, 0);
        }
        assert_eq!(l.next_summary_in(1), Some(REFILL_MS - 1));
        assert_eq!(l.poll_summaries(REFILL_MS - 1, false), []);
        assert_eq!(l.next_summary_in(REFILL_MS), Some(0));
        let due = l.poll_summaries(REFILL_MS, false);
        assert_eq!(
            due,
            [Summary {
                site: REFUSED,
                level: Level::Info,
                count: 5
            }]
        );
        assert_eq!(l.next_summary_in(REFILL_MS), None);
        // The summary spent the token.
        assert!(!passes(&mut l, REFUSED, REFILL_MS));
        assert_eq!(l.poll_summaries(REFILL_MS, true)[0].count, 1);
        assert_eq!(l.poll_summaries(REFILL_MS, true), []);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_sites_with_counts() {
        let mut l = Limiter::default();
        for _ in 0..=BURST {
            l.check(REFUSED, Level::Warn, 0);
        }
        for line in 0..MAX_SITES as u32 * 2 {
            let site = Site { line, ..BLOCKED };
            assert!(passes(&mut l, site, 1));
        }
        assert!(l.buckets.len() <= MAX_SITES);
        assert_eq!(l.poll_summaries(2, true)[0].count, 1);
    }
}

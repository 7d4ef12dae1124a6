//! The ordered filter rule chain, behind HA's include/exclude gate, with a decision cache.
//!
//! Order of evaluation for one event:
//!
//! 1. the gate: `[filter.include]` / `[filter.exclude]` with Home Assistant's
//!    exact semantics ([`EntityFilter`]); what it drops is dropped;
//! 2. the rules of `[[filter.rules]]` in order: the first whose match holds
//!    decides (`include` keeps, `exclude` drops);
//! 3. `filter.default` when no rule matched.
//!
//! A rule's match has a *static* part (event type, domain, entity, source:
//! fixed for one entity, event type and source) and a *dynamic* part
//! (attribute, state, expression: read per event). The static parts of every
//! rule, and the gate, are evaluated once per (event type, entity id[, source])
//! and kept in a bounded cache as a plan: the rules whose static part holds,
//! in order, up to the first fully static one. Per event only the dynamic
//! parts of those candidates run.
//!
//! The module is split by concern: `compile.rs` turns `[filter]` into the
//! compiled chain (globs, regexes, expressions, time windows, steps) or a
//! [`RuleError`] naming the rule and the key; `matcher.rs` holds a compiled
//! match and decides whether it holds for one event; `eval.rs` is the hot path
//! (cache key, plans, CLOCK eviction, counting, timing, transform steps). This
//! file holds the public types and the chain's read-outs (counts, outcomes,
//! plan text, the per-rule trace for `explain`). The tests are in `tests.rs`,
//! the events they build in `test_support.rs`, shared with the tests of the
//! other pipeline modules.

mod compile;
mod eval;
mod matcher;

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use super::filter::{EntityFilter, FilterError};
use crate::event::Event;
use compile::Rule;
use eval::Plan;
use matcher::{Eval, dynamic_holds, static_holds};

/// Cached plans kept at most (one per entity and event type: far above a large HA install); CLOCK-evicted beyond.
pub const CACHE_LIMIT: usize = 100_000;

/// One event in this many has each rule it runs timed: two clock reads per rule, so the
/// per-rule evaluation time costs well under 1 % of the chain (see `bench rules`).
pub const TIME_SAMPLE: u32 = 64;

/// Timed evaluations kept between two drains at most (the pipeline drains once per batch).
const TIME_SAMPLES_KEPT: usize = 4096;

/// Why the rule chain could not be built; names the rule and the key.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The include/exclude gate did not compile.
    #[error(transparent)]
    Gate(#[from] FilterError),
    /// `filter.time_zone` is not an IANA zone.
    #[error("filter.time_zone: {message}")]
    TimeZone {
        /// What is wrong.
        message: String,
    },
    /// `filter.default` must decide.
    #[error("filter.default: must be \"include\" or \"exclude\" (\"transform\" is for rules)")]
    Default,
    /// A rule's key outside its match is invalid (`transform[2].to` …).
    #[error("filter rule {rule:?}: {key}: {message}")]
    Rule {
        /// The rule's name.
        rule: String,
        /// The key at fault.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A rule's match is invalid.
    #[error("filter rule {rule:?}: match.{key}: {message}")]
    Invalid {
        /// The rule's name.
        rule: String,
        /// The key at fault (`entity.regex`, `attribute.gt`, `expression` …).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// What decided an event's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// The HA include/exclude gate dropped it.
    Gate,
    /// The rule at this index matched.
    Rule(usize),
    /// The rule at this index failed to evaluate and its `on_error` decided.
    RuleError(usize),
    /// No rule matched; `filter.default` applied.
    Default,
}

/// The chain's verdict for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the event is kept.
    pub keep: bool,
    /// Why.
    pub by: DecidedBy,
}

/// Per-rule counts since they were last drained, added to metrics once per batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Events this rule decided (it was the first match).
    pub matches: u64,
    /// Run-time evaluation failures (expressions).
    pub errors: u64,
}

/// The compiled chain: gate, rules, default and the decision cache.
pub struct RuleChain {
    gate: EntityFilter,
    rules: Vec<Rule>,
    default_keep: bool,
    key_has_source: bool,
    /// Plans by key, each with its CLOCK "used since the hand last passed" bit.
    cache: HashMap<Box<str>, (Plan, bool)>,
    /// The cached keys in insertion slots: the CLOCK the hand sweeps when the cache is full.
    clock: Vec<Box<str>>,
    hand: usize,
    cache_limit: usize,
    key: String,
    counts: Vec<RuleCounts>,
    error_logged: Vec<bool>,
    /// Rules whose steps the last decision applies, in chain order.
    applied: Vec<u32>,
    /// The gate and default as configured, for the plan.
    gate_text: String,
    /// The last decision made (for `explain`).
    last: Option<Decision>,
    outcomes: Vec<RuleOutcomes>,
    /// Counts events for [`TIME_SAMPLE`].
    sample: u32,
    /// Timed evaluations since the last drain: (rule index, nanoseconds).
    times: Vec<(u32, u32)>,
}

/// Per-rule outcome counts since they were last drained: what the rule did to the events it matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleOutcomes {
    /// Events this rule kept (as the deciding rule, or by `on_error = "keep"`).
    pub included: u64,
    /// Events this rule dropped (as the deciding rule, by `on_error = "drop"`, or a failing step).
    pub excluded: u64,
    /// Events this rule's transform steps were applied to.
    pub transformed: u64,
}

impl RuleChain {
    /// The rules' names, in chain order (the `rule` metric label).
    pub fn rule_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Caps the decision cache (tests use a tiny one to exercise eviction).
    pub fn set_cache_limit(&mut self, limit: usize) {
        self.cache_limit = limit.max(1);
        self.cache.clear();
        self.clock.clear();
        self.hand = 0;
    }

    /// Plans currently cached.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Counts per rule (chain order) since the last [`RuleChain::drain_counts`].
    pub fn counts(&self) -> &[RuleCounts] {
        &self.counts
    }

    /// Hands each rule's non-zero counts to `f` (index, counts) and resets them.
    pub fn drain_counts(&mut self, mut f: impl FnMut(usize, RuleCounts)) {
        for (i, c) in self.counts.iter_mut().enumerate() {
            if *c != RuleCounts::default() {
                f(i, *c);
                *c = RuleCounts::default();
            }
        }
    }

    /// What decided the last event (`None` before the first).
    pub fn last_decided_by(&self) -> Option<DecidedBy> {
        self.last.map(|d| d.by)
    }

    /// Whether the last decision kept the event.
    pub fn last_kept(&self) -> bool {
        self.last.is_some_and(|d| d.keep)
    }

    /// The rules whose transform steps the last decision applies, in chain order.
    pub fn applied(&self) -> &[u32] {
        &self.applied
    }

    /// Hands each timed rule evaluation since the last call to `f` (rule index, seconds) and forgets them.
    ///
    /// One event in [`TIME_SAMPLE`] is timed: every rule whose tests ran for it gives one
    /// sample. A rule decided by the cache alone runs no test and gives none.
    pub fn drain_eval_times(&mut self, mut f: impl FnMut(usize, f64)) {
        for (i, nanos) in self.times.drain(..) {
            f(i as usize, f64::from(nanos) / 1e9);
        }
    }

    /// Outcome counts per rule (chain order) since the last [`RuleChain::drain_outcomes`].
    pub fn outcomes(&self) -> &[RuleOutcomes] {
        &self.outcomes
    }

    /// Hands each rule's non-zero outcome counts to `f` (index, counts) and resets them.
    pub fn drain_outcomes(&mut self, mut f: impl FnMut(usize, RuleOutcomes)) {
        for (i, c) in self.outcomes.iter_mut().enumerate() {
            if *c != RuleOutcomes::default() {
                f(i, *c);
                *c = RuleOutcomes::default();
            }
        }
    }

    /// The compiled plan, one line per item: gate, each rule (action, match, what is cached, steps), default.
    pub fn plan_text(&self) -> Vec<String> {
        let mut lines = vec![format!("gate: {}", self.gate_text)];
        for (i, r) in self.rules.iter().enumerate() {
            let action = if r.transform_only {
                "transform"
            } else if r.keep {
                "include"
            } else {
                "exclude"
            };
            let kind = if r.is_static {
                "static: decided once per entity and cached"
            } else {
                "dynamic: tests run per event"
            };
            let mut line = format!(
                "rule {} {:?}: {action} when {} ({kind}",
                i + 1,
                r.name,
                r.match_text
            );
            if let Some(t) = &r.dynamic.time {
                line.push_str(&format!("; {}", t.describe()));
            }
            if r.dynamic.expression.is_some() {
                line.push_str(&format!("; on_error {:?}", r.on_error));
            }
            line.push(')');
            lines.push(line);
            for step in r.transform.iter().flat_map(|t| t.plan()) {
                lines.push(format!("    then {step}"));
            }
            if let Some(rate) = &r.rate_text {
                lines.push(format!("    then {rate}"));
            }
        }
        lines.push(format!(
            "default: {}",
            if self.default_keep {
                "include"
            } else {
                "exclude"
            }
        ));
        lines
    }

    /// Each rule's own verdict on the event, ignoring order (for `explain`): `Ok(true)` holds, `Err` failed.
    pub fn trace(&self, event: &Event) -> Vec<(&str, Result<bool, String>)> {
        self.rules
            .iter()
            .map(|r| {
                let verdict = if !static_holds(&r.fixed, event) {
                    Ok(false)
                } else {
                    match dynamic_holds(&r.dynamic, event) {
                        Eval::Match => Ok(true),
                        Eval::NoMatch => Ok(false),
                        Eval::Error(e) => Err(e),
                    }
                };
                (r.name.as_str(), verdict)
            })
            .collect()
    }

    /// Whether the HA include/exclude gate keeps the event.
    pub fn gate_keeps(&self, event: &Event) -> bool {
        self.gate.keep(event)
    }

    /// The last rule among [`RuleChain::applied`] that has a `rate`: the one that shapes the event.
    pub fn rate_rule(&self) -> Option<usize> {
        self.applied
            .iter()
            .rev()
            .map(|&i| i as usize)
            .find(|&i| self.rules[i].rate_text.is_some())
    }

    /// Whether any rule has transform steps.
    pub fn has_transforms(&self) -> bool {
        self.rules.iter().any(|r| r.transform.is_some())
    }
}

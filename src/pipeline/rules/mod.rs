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

use std::collections::HashMap;

use globset::GlobSet;
use regex::{Regex, RegexSet};

use super::expression::EventExpression;
use super::filter::{EntityFilter, FilterError, glob_set};
use super::rate::RateSpec;
use super::time_window::{TimeWindow, parse_zone};
use super::transform::Transform;
use crate::config::{
    AttributeMatchConfig, FilterAction, FilterConfig, FilterRuleConfig, OnError, StateMatchConfig,
    StateSide,
};
use crate::event::{Event, LazyState, State};
use crate::sink::schema::PointOverrides;

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

/// Numeric bounds; every one given must hold.
#[derive(Debug, Default, Clone, Copy)]
struct Range {
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

impl Range {
    fn is_set(&self) -> bool {
        self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some()
    }

    fn holds(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

struct AttributeTest {
    name: String,
    side: StateSide,
    exists: Option<bool>,
    equals: Option<serde_json::Value>,
    one_of: Option<Vec<serde_json::Value>>,
    range: Range,
    regex: Option<Regex>,
}

struct StateTest {
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    range: Range,
    changed: Option<bool>,
    attributes_only_changed: Option<bool>,
}

/// The parts of a match fixed by (event type, entity id, source).
#[derive(Default)]
struct StaticMatch {
    event_types: Option<GlobSet>,
    domains: Vec<String>,
    entity: Option<(GlobSet, RegexSet)>,
    sources: Vec<String>,
}

/// The parts read per event.
#[derive(Default)]
struct DynamicMatch {
    attributes: Vec<AttributeTest>,
    state: Option<StateTest>,
    expression: Option<EventExpression>,
    time: Option<TimeWindow>,
}

enum Eval {
    Match,
    NoMatch,
    Error(String),
}

struct Rule {
    name: String,
    keep: bool,
    /// `action = "transform"`: apply the steps and go on down the chain.
    transform_only: bool,
    /// The steps, when the rule has any.
    transform: Option<Transform>,
    /// The match as written, compact, for the plan.
    match_text: String,
    /// The rule's `rate`, described; `Some` when it has one.
    rate_text: Option<String>,
    on_error: OnError,
    fixed: StaticMatch,
    dynamic: DynamicMatch,
    is_static: bool,
}

/// What the static parts decided for one (event type, entity, source).
#[derive(Debug, Clone)]
enum Plan {
    /// The gate drops it.
    Gate,
    /// Run the dynamic parts of `candidates` in order, then `terminal` (a fully static rule) or the default.
    Chain {
        candidates: Box<[u32]>,
        terminal: Option<u32>,
    },
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
    /// Compiles the gate and every rule once; the error names the rule and the key.
    pub fn new(cfg: &FilterConfig) -> Result<RuleChain, RuleError> {
        let zone = match &cfg.time_zone {
            Some(name) => Some(parse_zone(name).map_err(|e| RuleError::TimeZone {
                message: e.to_string(),
            })?),
            None => None,
        };
        let rules = cfg
            .rules
            .iter()
            .map(|r| compile_rule(r, zone))
            .collect::<Result<Vec<_>, _>>()?;
        if cfg.default == FilterAction::Transform {
            return Err(RuleError::Default);
        }
        let key_has_source = rules.iter().any(|r| !r.fixed.sources.is_empty());
        Ok(RuleChain {
            gate: EntityFilter::new(cfg)?,
            counts: vec![RuleCounts::default(); rules.len()],
            error_logged: vec![false; rules.len()],
            applied: Vec::new(),
            last: None,
            gate_text: if cfg.include == Default::default() && cfg.exclude == Default::default() {
                "none (no include/exclude lists)".to_string()
            } else {
                format!(
                    "include {} exclude {}",
                    serde_json::to_string(&cfg.include).unwrap_or_default(),
                    serde_json::to_string(&cfg.exclude).unwrap_or_default()
                )
            },
            outcomes: vec![RuleOutcomes::default(); rules.len()],
            sample: 0,
            times: Vec::new(),
            rules,
            default_keep: cfg.default == FilterAction::Include,
            key_has_source,
            cache: HashMap::new(),
            clock: Vec::new(),
            hand: 0,
            cache_limit: CACHE_LIMIT,
            key: String::with_capacity(96),
        })
    }

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

    /// The decision for one event, using the cache for the static parts: the hot path.
    ///
    /// Matches read the event as it arrived; the transform steps of the rules that
    /// matched are listed by [`RuleChain::applied`] and run by [`RuleChain::apply_transforms`].
    pub fn decide(&mut self, event: &Event) -> Decision {
        self.applied.clear();
        self.sample = self.sample.wrapping_add(1);
        let timed = self.sample.is_multiple_of(TIME_SAMPLE) && self.times.len() < TIME_SAMPLES_KEPT;
        let decision = self.decide_cached(event, timed);
        self.note(decision);
        decision
    }

    /// Counts a decision in its rule's outcomes.
    fn note(&mut self, decision: Decision) {
        self.last = Some(decision);
        if let DecidedBy::Rule(i) | DecidedBy::RuleError(i) = decision.by
            && let Some(o) = self.outcomes.get_mut(i)
        {
            if decision.keep {
                o.included += 1;
            } else {
                o.excluded += 1;
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

    /// Runs the steps of [`RuleChain::applied`] on the kept event, in order; `false` when a step drops it.
    pub fn apply_transforms(&mut self, event: &mut Event, overrides: &mut PointOverrides) -> bool {
        for &i in &self.applied {
            let i = i as usize;
            let Some(transform) = self.rules[i].transform.as_ref() else {
                continue;
            };
            let applied = transform.apply(event, overrides);
            self.outcomes[i].transformed += 1;
            if applied.errors > 0 {
                self.counts[i].errors += u64::from(applied.errors);
                if !self.error_logged[i] {
                    self.error_logged[i] = true;
                    tracing::warn!(
                        message = "A transform step failed; counted in ha_ingestor_filter_rule_errors_total, logged once per rule.",
                        rule = %self.rules[i].name,
                        error = applied.first_error.as_deref().unwrap_or(""),
                    );
                }
            }
            if applied.drop {
                self.outcomes[i].excluded += 1;
                return false;
            }
        }
        true
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

    fn decide_cached(&mut self, event: &Event, timed: bool) -> Decision {
        if self.rules.is_empty() {
            // The gate alone: a few set look-ups, cheaper than the cache.
            return self.decide_full(event, false);
        }
        // Length-prefixed parts: no event type, entity id or source from outside can
        // make two different events share a key.
        let mut digits = itoa::Buffer::new();
        self.key.clear();
        let event_type = event.event_type();
        self.key.push_str(digits.format(event_type.len()));
        self.key.push(':');
        self.key.push_str(event_type);
        match event.entity_id() {
            Some(id) => {
                self.key.push_str(digits.format(id.as_str().len()));
                self.key.push(':');
                self.key.push_str(id.as_str());
            }
            None => self.key.push('-'),
        }
        if self.key_has_source {
            self.key.push_str(&event.source);
        }
        let RuleChain {
            rules,
            cache,
            key,
            counts,
            error_logged,
            default_keep,
            applied,
            times,
            ..
        } = self;
        if let Some((plan, used)) = cache.get_mut(key.as_str()) {
            *used = true;
            let mut run = Runner {
                rules,
                counts,
                error_logged,
                applied,
                times: timed.then_some(times),
            };
            return follow(plan, &mut run, *default_keep, event);
        }
        // A miss: evaluate the static parts once, decide, then keep the plan.
        let plan = self.plan(event);
        let mut run = Runner {
            rules: &self.rules,
            counts: &mut self.counts,
            error_logged: &mut self.error_logged,
            applied: &mut self.applied,
            times: timed.then_some(&mut self.times),
        };
        let decision = follow(&plan, &mut run, self.default_keep, event);
        self.remember(plan);
        decision
    }

    /// Caches `plan` under the current key; when full, CLOCK evicts a plan not used since the hand last passed.
    fn remember(&mut self, plan: Plan) {
        let key: Box<str> = self.key.as_str().into();
        if self.clock.len() < self.cache_limit {
            self.clock.push(key.clone());
        } else {
            // At most two sweeps: the first clears every bit it passes.
            loop {
                let slot = self.hand;
                self.hand = (self.hand + 1) % self.clock.len();
                match self.cache.get_mut(&self.clock[slot]) {
                    Some((_, used)) if *used => *used = false,
                    _ => {
                        let old = std::mem::replace(&mut self.clock[slot], key.clone());
                        self.cache.remove(&old);
                        break;
                    }
                }
            }
        }
        self.cache.insert(key, (plan, false));
    }

    /// The decision evaluated from scratch, every rule in full: the reference the cache must agree with.
    pub fn decide_uncached(&mut self, event: &Event) -> Decision {
        self.applied.clear();
        let decision = self.decide_full(event, false);
        self.note(decision);
        decision
    }

    fn decide_full(&mut self, event: &Event, timed: bool) -> Decision {
        if !self.gate.keep(event) {
            return Decision {
                keep: false,
                by: DecidedBy::Gate,
            };
        }
        let mut run = Runner {
            rules: &self.rules,
            counts: &mut self.counts,
            error_logged: &mut self.error_logged,
            applied: &mut self.applied,
            times: timed.then_some(&mut self.times),
        };
        for i in 0..run.rules.len() {
            if !static_holds(&run.rules[i].fixed, event) {
                continue;
            }
            if let Some(d) = run.dynamic(i, event) {
                return d;
            }
        }
        Decision {
            keep: self.default_keep,
            by: DecidedBy::Default,
        }
    }

    /// Evaluates the gate and the static parts for the event's (type, entity, source).
    fn plan(&self, event: &Event) -> Plan {
        if !self.gate.keep(event) {
            return Plan::Gate;
        }
        let mut candidates = Vec::new();
        let mut terminal = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if !static_holds(&rule.fixed, event) {
                continue;
            }
            if rule.is_static && !rule.transform_only {
                terminal = Some(i as u32);
                break;
            }
            candidates.push(i as u32);
        }
        Plan::Chain {
            candidates: candidates.into_boxed_slice(),
            terminal,
        }
    }
}

/// What running rules per event writes to: counts, the log-once flags, the applied steps, timings.
struct Runner<'a> {
    rules: &'a [Rule],
    counts: &'a mut [RuleCounts],
    error_logged: &'a mut [bool],
    applied: &'a mut Vec<u32>,
    /// `Some` for an event whose rule runs are timed.
    times: Option<&'a mut Vec<(u32, u32)>>,
}

impl Runner<'_> {
    /// Runs rule `i`'s dynamic part, timed when the event is sampled.
    fn dynamic(&mut self, i: usize, event: &Event) -> Option<Decision> {
        let Some(times) = self.times.as_deref_mut() else {
            return run_dynamic(
                self.rules,
                self.counts,
                self.error_logged,
                self.applied,
                i,
                event,
            );
        };
        let started = std::time::Instant::now();
        let decision = run_dynamic(
            self.rules,
            self.counts,
            self.error_logged,
            self.applied,
            i,
            event,
        );
        let nanos = u32::try_from(started.elapsed().as_nanos()).unwrap_or(u32::MAX);
        times.push((i as u32, nanos));
        decision
    }
}

/// Runs a cached plan: the candidates' dynamic parts in order, then its terminal rule or the default.
fn follow(plan: &Plan, run: &mut Runner<'_>, default_keep: bool, event: &Event) -> Decision {
    let (candidates, terminal) = match plan {
        Plan::Gate => {
            return Decision {
                keep: false,
                by: DecidedBy::Gate,
            };
        }
        Plan::Chain {
            candidates,
            terminal,
        } => (candidates, terminal),
    };
    for &i in candidates.iter() {
        if let Some(d) = run.dynamic(i as usize, event) {
            return d;
        }
    }
    match terminal {
        Some(i) => {
            let i = *i as usize;
            run.counts[i].matches += 1;
            if run.rules[i].transform.is_some() || run.rules[i].rate_text.is_some() {
                run.applied.push(i as u32);
            }
            Decision {
                keep: run.rules[i].keep,
                by: DecidedBy::Rule(i),
            }
        }
        None => Decision {
            keep: default_keep,
            by: DecidedBy::Default,
        },
    }
}

/// Runs rule `i`'s dynamic part (its static part already holds): `Some` when it decides.
fn run_dynamic(
    rules: &[Rule],
    counts: &mut [RuleCounts],
    error_logged: &mut [bool],
    applied: &mut Vec<u32>,
    i: usize,
    event: &Event,
) -> Option<Decision> {
    let rule = &rules[i];
    match dynamic_holds(&rule.dynamic, event) {
        Eval::Match => {
            counts[i].matches += 1;
            if rule.transform.is_some() || rule.rate_text.is_some() {
                applied.push(i as u32);
            }
            if rule.transform_only {
                return None;
            }
            Some(Decision {
                keep: rule.keep,
                by: DecidedBy::Rule(i),
            })
        }
        Eval::NoMatch => None,
        Eval::Error(error) => {
            counts[i].errors += 1;
            if !error_logged[i] {
                error_logged[i] = true;
                tracing::warn!(
                    message = "A filter expression failed; counted in ha_ingestor_filter_rule_errors_total, logged once per rule.",
                    rule = %rule.name,
                    %error,
                    on_error = ?rule.on_error,
                );
            }
            match rule.on_error {
                OnError::Skip => None,
                OnError::Keep => Some(Decision {
                    keep: true,
                    by: DecidedBy::RuleError(i),
                }),
                OnError::Drop => Some(Decision {
                    keep: false,
                    by: DecidedBy::RuleError(i),
                }),
            }
        }
    }
}

fn static_holds(m: &StaticMatch, event: &Event) -> bool {
    if let Some(types) = &m.event_types
        && !types.is_match(event.event_type())
    {
        return false;
    }
    if !m.sources.is_empty() && !m.sources.iter().any(|s| **s == *event.source) {
        return false;
    }
    if m.domains.is_empty() && m.entity.is_none() {
        return true;
    }
    let Some(id) = event.entity_id() else {
        return false;
    };
    if !m.domains.is_empty() && !m.domains.iter().any(|d| d == id.domain()) {
        return false;
    }
    if let Some((globs, regexes)) = &m.entity
        && !globs.is_match(id.as_str())
        && !regexes.is_match(id.as_str())
    {
        return false;
    }
    true
}

fn dynamic_holds(m: &DynamicMatch, event: &Event) -> Eval {
    if let Some(window) = &m.time
        && !window.holds(event.time_fired)
    {
        return Eval::NoMatch;
    }
    let sc = event.state_changed();
    if !m.attributes.is_empty() || m.state.is_some() {
        let Some(sc) = sc else {
            return Eval::NoMatch;
        };
        let new = sc.new_state.as_ref();
        let old = || sc.old_state.as_ref().and_then(|o| o.state());
        for test in &m.attributes {
            let state = match test.side {
                StateSide::New => new,
                StateSide::Old => old(),
            };
            if !attribute_holds(test, state) {
                return Eval::NoMatch;
            }
        }
        if let Some(test) = &m.state
            && !state_holds(test, new, sc.old_state.as_ref())
        {
            return Eval::NoMatch;
        }
    }
    if let Some(expression) = &m.expression {
        return match expression.eval(event) {
            Ok(true) => Eval::Match,
            Ok(false) => Eval::NoMatch,
            Err(e) => Eval::Error(e.to_string()),
        };
    }
    Eval::Match
}

fn attribute_holds(test: &AttributeTest, state: Option<&State>) -> bool {
    let value = state.and_then(|s| s.attributes.get(&test.name));
    if let Some(want) = test.exists
        && value.is_some() != want
    {
        return false;
    }
    if let Some(want) = &test.equals
        && !value.is_some_and(|v| json_eq(v, want))
    {
        return false;
    }
    if let Some(list) = &test.one_of
        && !value.is_some_and(|v| list.iter().any(|w| json_eq(v, w)))
    {
        return false;
    }
    if test.range.is_set()
        && !value
            .and_then(json_number)
            .is_some_and(|x| test.range.holds(x))
    {
        return false;
    }
    if let Some(re) = &test.regex {
        let matched = match value {
            Some(serde_json::Value::String(s)) => re.is_match(s),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                re.is_match(&v.to_string())
            }
            _ => false,
        };
        if !matched {
            return false;
        }
    }
    true
}

fn state_holds(test: &StateTest, new: Option<&State>, old: Option<&LazyState>) -> bool {
    let value = new.map(|s| s.state.as_str());
    if let Some(want) = &test.equals
        && value != Some(want.as_str())
    {
        return false;
    }
    if let Some(list) = &test.one_of
        && !value.is_some_and(|v| list.iter().any(|w| w == v))
    {
        return false;
    }
    if test.range.is_set()
        && !value
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|x| test.range.holds(x))
    {
        return false;
    }
    // The old state's value alone, read without decoding its attributes (most of its cost).
    let old_value = || match old {
        None => None,
        Some(o) => o.peek_state().or_else(|| {
            o.state()
                .map(|s| std::borrow::Cow::Borrowed(s.state.as_str()))
        }),
    };
    if let Some(want) = test.changed {
        let before = old_value();
        if (value != before.as_deref()) != want {
            return false;
        }
    }
    if let Some(want) = test.attributes_only_changed {
        // Decoded only when the values are equal and the attributes must be compared.
        let only_attributes = match (new, old_value()) {
            (Some(n), Some(before)) if n.state == before => old
                .and_then(|o| o.state())
                .is_some_and(|o| !same_attributes(&n.attributes, &o.attributes)),
            _ => false,
        };
        if only_attributes != want {
            return false;
        }
    }
    true
}

/// Same keys and values in any order, as HA compares attribute dicts.
fn same_attributes(a: &crate::event::Attributes, b: &crate::event::Attributes) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// Equality of HA's JSON with a configured value; numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A number, or a string holding one (some integrations send numbers as text).
fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compile_rule(cfg: &FilterRuleConfig, zone: Option<chrono_tz::Tz>) -> Result<Rule, RuleError> {
    let invalid = |key: &str, message: String| RuleError::Invalid {
        rule: cfg.name.clone(),
        key: key.to_string(),
        message,
    };
    let m = &cfg.matches;
    let globs = |key: &str, list: &[String]| -> Result<GlobSet, RuleError> {
        glob_set(list).map_err(|e| match e.glob() {
            Some(glob) => invalid(key, format!("bad glob {glob:?}: {e}")),
            None => invalid(key, format!("globs do not compile: {e}")),
        })
    };
    let mut fixed = StaticMatch::default();
    if !m.event_type.is_empty() {
        fixed.event_types = Some(globs("event_type", &m.event_type)?);
    }
    fixed.domains = m.domain.clone();
    fixed.sources = m.source.clone();
    if let Some(entity) = &m.entity {
        if entity.glob.is_empty() && entity.regex.is_empty() {
            return Err(invalid("entity", "give glob or regex (or both)".into()));
        }
        let set = globs("entity.glob", &entity.glob)?;
        for re in &entity.regex {
            Regex::new(re)
                .map_err(|e| invalid("entity.regex", format!("bad regex {re:?}: {e}")))?;
        }
        let regexes = RegexSet::new(&entity.regex)
            .map_err(|e| invalid("entity.regex", format!("regexes do not compile: {e}")))?;
        fixed.entity = Some((set, regexes));
    }
    let mut dynamic = DynamicMatch::default();
    for a in &m.attribute {
        dynamic.attributes.push(compile_attribute(a, &invalid)?);
    }
    if let Some(s) = &m.state {
        dynamic.state = Some(compile_state(s, &invalid)?);
    }
    if let Some(source) = &m.expression {
        dynamic.expression = Some(
            EventExpression::compile(source).map_err(|e| invalid("expression", e.to_string()))?,
        );
    }
    if let Some(t) = &m.time {
        let zone = match &t.time_zone {
            Some(name) => parse_zone(name).map_err(|e| invalid("time.time_zone", e.to_string()))?,
            None => zone.unwrap_or(chrono_tz::Tz::UTC),
        };
        dynamic.time = Some(
            TimeWindow::new(zone, t.after.as_deref(), t.before.as_deref(), &t.weekdays)
                .map_err(|e| invalid("time", e.to_string()))?,
        );
    }
    let transform = match (cfg.action, cfg.transform.is_empty()) {
        (FilterAction::Exclude, false) => {
            return Err(RuleError::Rule {
                rule: cfg.name.clone(),
                key: "transform".into(),
                message: "an excluded event is not written: transform with action \"include\" or \"transform\"".into(),
            });
        }
        (FilterAction::Transform, true) if cfg.rate.is_none() => {
            return Err(RuleError::Rule {
                rule: cfg.name.clone(),
                key: "transform".into(),
                message: "action \"transform\" needs transform steps or a rate".into(),
            });
        }
        (_, true) => None,
        (_, false) => Some(Transform::new(&cfg.transform).map_err(|e| RuleError::Rule {
            rule: cfg.name.clone(),
            key: e.key,
            message: e.message,
        })?),
    };
    if let Some(t) = &transform {
        // Which events the match can select: entity, attribute and state tests need a state change.
        let matches_state_changes = fixed
            .event_types
            .as_ref()
            .is_none_or(|types| types.is_match(crate::event::STATE_CHANGED));
        let matches_other_events = fixed.domains.is_empty()
            && fixed.entity.is_none()
            && dynamic.attributes.is_empty()
            && dynamic.state.is_none()
            && (m.event_type.is_empty()
                || m.event_type
                    .iter()
                    .any(|t| t != crate::event::STATE_CHANGED));
        t.check_reach(matches_state_changes, matches_other_events)
            .map_err(|e| RuleError::Rule {
                rule: cfg.name.clone(),
                key: e.key,
                message: e.message,
            })?;
    }
    let rate_text = match &cfg.rate {
        Some(rate) => {
            if !cfg.keep_or_transform() {
                return Err(RuleError::Rule {
                    rule: cfg.name.clone(),
                    key: "rate".into(),
                    message: "an excluded event is not written: rate with action \"include\" or \"transform\"".into(),
                });
            }
            Some(
                RateSpec::new(rate)
                    .map_err(|e| RuleError::Rule {
                        rule: cfg.name.clone(),
                        key: e.key,
                        message: e.message,
                    })?
                    .describe(),
            )
        }
        None => None,
    };
    let is_static = dynamic.attributes.is_empty()
        && dynamic.state.is_none()
        && dynamic.expression.is_none()
        && dynamic.time.is_none();
    Ok(Rule {
        name: cfg.name.clone(),
        keep: cfg.action == FilterAction::Include,
        transform_only: cfg.action == FilterAction::Transform,
        transform,
        match_text: serde_json::to_string(&cfg.matches).unwrap_or_default(),
        rate_text,
        on_error: cfg.on_error,
        fixed,
        dynamic,
        is_static,
    })
}

fn compile_attribute(
    a: &AttributeMatchConfig,
    invalid: &impl Fn(&str, String) -> RuleError,
) -> Result<AttributeTest, RuleError> {
    if a.name.is_empty() {
        return Err(invalid("attribute.name", "must not be empty".into()));
    }
    let range = Range {
        gt: a.gt,
        gte: a.gte,
        lt: a.lt,
        lte: a.lte,
    };
    let regex = match &a.regex {
        Some(re) => Some(
            Regex::new(re)
                .map_err(|e| invalid("attribute.regex", format!("bad regex {re:?}: {e}")))?,
        ),
        None => None,
    };
    if a.exists.is_none()
        && a.equals.is_none()
        && a.one_of.is_none()
        && !range.is_set()
        && regex.is_none()
    {
        return Err(invalid(
            "attribute",
            format!(
                "attribute {:?} has no test: give exists, equals, in, gt, gte, lt, lte or regex",
                a.name
            ),
        ));
    }
    Ok(AttributeTest {
        name: a.name.clone(),
        side: a.on,
        exists: a.exists,
        equals: a.equals.clone(),
        one_of: a.one_of.clone(),
        range,
        regex,
    })
}

fn compile_state(
    s: &StateMatchConfig,
    invalid: &impl Fn(&str, String) -> RuleError,
) -> Result<StateTest, RuleError> {
    let range = Range {
        gt: s.gt,
        gte: s.gte,
        lt: s.lt,
        lte: s.lte,
    };
    if s.equals.is_none()
        && s.one_of.is_none()
        && !range.is_set()
        && s.changed.is_none()
        && s.attributes_only_changed.is_none()
    {
        return Err(invalid(
            "state",
            "no test: give equals, in, gt, gte, lt, lte, changed or attributes_only_changed".into(),
        ));
    }
    Ok(StateTest {
        equals: s.equals.clone(),
        one_of: s.one_of.clone(),
        range,
        changed: s.changed,
        attributes_only_changed: s.attributes_only_changed,
    })
}

/// Events for unit tests of this module and of the expressions.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use crate::event::{
        Attributes, BusEvent, Context, EntityId, Event, EventKind, LazyState, Origin, State,
        StateChanged, Timestamp,
    };

    fn state(entity: &str, value: &str, attributes: serde_json::Value) -> State {
        let attributes: Attributes = match attributes {
            serde_json::Value::Object(map) => map.into(),
            _ => Attributes::new(),
        };
        State::at(
            EntityId::new(entity).unwrap(),
            value.to_string(),
            attributes,
            Timestamp::from_nanos(1_790_000_000_000_000_000),
        )
    }

    /// A `state_changed` for `entity`; `old` gives the old state's value (same attributes).
    pub fn state_event(
        entity: &str,
        value: &str,
        attributes: serde_json::Value,
        old: Option<&str>,
    ) -> Event {
        let old_state = old.map(|o| LazyState::from(state(entity, o, attributes.clone())));
        Event {
            meta: Default::default(),
            source: Arc::from("homeassistant"),
            time_fired: Timestamp::from_nanos(1_795_725_887_219_127_000),
            origin: Origin::Local,
            context: Context::default(),
            kind: EventKind::StateChanged(Box::new(StateChanged {
                entity_id: EntityId::new(entity).unwrap(),
                old_state,
                new_state: Some(state(entity, value, attributes)),
            })),
        }
    }

    /// A bus event of `event_type` with empty data.
    pub fn bus_event(event_type: &str) -> Event {
        Event {
            meta: Default::default(),
            source: Arc::from("homeassistant"),
            time_fired: Timestamp::from_nanos(1_795_725_887_219_127_000),
            origin: Origin::Local,
            context: Context::default(),
            kind: EventKind::Bus(BusEvent {
                event_type: event_type.to_string(),
                data: serde_json::Map::new(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{bus_event, state_event};
    use super::*;
    use crate::event::Timestamp;
    use serde_json::json;

    /// A chain from the `[filter]` section given as TOML.
    fn chain(toml_text: &str) -> RuleChain {
        let cfg: FilterConfig = toml::from_str(toml_text).unwrap();
        RuleChain::new(&cfg).unwrap()
    }

    fn build_err(toml_text: &str) -> String {
        let cfg: FilterConfig = toml::from_str(toml_text).unwrap();
        match RuleChain::new(&cfg) {
            Ok(_) => panic!("expected an error for {toml_text}"),
            Err(e) => e.to_string(),
        }
    }

    /// Decides with and without the cache and checks they agree.
    fn decide(c: &mut RuleChain, e: &Event) -> Decision {
        let cached = c.decide(e);
        assert_eq!(cached, c.decide_uncached(e));
        cached
    }

    fn kept(c: &mut RuleChain, e: &Event) -> bool {
        decide(c, e).keep
    }

    fn sensor(id: &str, value: &str, attributes: serde_json::Value) -> Event {
        state_event(id, value, attributes, None)
    }

    /// Table-driven: each row's event must be kept (or not) by the chain, cached and uncached;
    /// the row's name is in the failure message.
    fn assert_rows(c: &mut RuleChain, rows: &[(&str, Event, bool)]) {
        for (name, event, keep) in rows {
            assert_eq!(kept(c, event), *keep, "row {name:?}");
        }
    }

    #[test]
    fn first_match_wins_then_default() {
        let mut c = chain(
            r#"
            default = "exclude"
            [[rules]]
            name = "drop linkquality"
            action = "exclude"
            match = { entity = { glob = ["sensor.*_linkquality"] } }
            [[rules]]
            name = "sensors"
            action = "include"
            match = { domain = ["sensor"] }
            "#,
        );
        let lq = sensor("sensor.plug_linkquality", "80", json!({}));
        assert_eq!(
            decide(&mut c, &lq),
            Decision {
                keep: false,
                by: DecidedBy::Rule(0)
            }
        );
        assert_eq!(
            decide(&mut c, &sensor("sensor.t", "1", json!({}))).by,
            DecidedBy::Rule(1)
        );
        assert_eq!(
            decide(&mut c, &sensor("light.a", "on", json!({}))),
            Decision {
                keep: false,
                by: DecidedBy::Default
            }
        );
        assert_eq!(
            c.counts(),
            [
                RuleCounts {
                    matches: 2,
                    errors: 0
                },
                RuleCounts {
                    matches: 2,
                    errors: 0
                }
            ],
            "decide and decide_uncached both count"
        );
    }

    #[test]
    fn gate_runs_before_the_rules() {
        let mut c = chain(
            r#"
            [exclude]
            domains = ["automation"]
            [[rules]]
            name = "keep all automations"
            action = "include"
            match = { domain = ["automation"] }
            [[rules]]
            name = "drop lights"
            action = "exclude"
            match = { domain = ["light"] }
            "#,
        );
        assert_eq!(
            decide(&mut c, &sensor("automation.a", "on", json!({}))).by,
            DecidedBy::Gate
        );
        assert!(!kept(&mut c, &sensor("light.a", "on", json!({}))));
        assert!(kept(&mut c, &sensor("switch.a", "on", json!({}))));
    }

    #[test]
    fn event_type_exact_and_glob_and_source() {
        let mut c = chain(
            r#"
            [[rules]]
            name = "no service calls from the simulator"
            action = "exclude"
            match = { event_type = ["call_*", "automation_triggered"], source = ["simulator"] }
            "#,
        );
        let from_simulator = |event_type: &str| {
            let mut e = bus_event(event_type);
            e.source = "simulator".into();
            e
        };
        assert_rows(
            &mut c,
            &[
                ("call from homeassistant", bus_event("call_service"), true),
                (
                    "call from the simulator",
                    from_simulator("call_service"),
                    false,
                ),
                (
                    "exact type from the simulator",
                    from_simulator("automation_triggered"),
                    false,
                ),
                (
                    "other type from the simulator",
                    from_simulator("script_started"),
                    true,
                ),
            ],
        );
    }

    #[test]
    fn entity_globs_and_regexes_and_domain_need_an_entity() {
        let mut c = chain(
            r#"
            default = "exclude"
            [[rules]]
            name = "power"
            action = "include"
            match = { entity = { glob = ["sensor.*_power"], regex = ['^switch\.plug_\d+$'] } }
            [[rules]]
            name = "domain"
            action = "include"
            match = { domain = ["light"] }
            "#,
        );
        assert_rows(
            &mut c,
            &[
                ("glob", sensor("sensor.tv_power", "3", json!({})), true),
                ("regex", sensor("switch.plug_12", "on", json!({})), true),
                (
                    "regex needs digits",
                    sensor("switch.plug_x", "on", json!({})),
                    false,
                ),
                ("domain", sensor("light.a", "on", json!({})), true),
                (
                    "a bus event has no entity",
                    bus_event("call_service"),
                    false,
                ),
            ],
        );
    }

    #[test]
    fn attribute_tests() {
        let mut c = chain(
            r#"
            default = "exclude"
            [[rules]]
            name = "unit"
            action = "include"
            match = { attribute = [{ name = "unit_of_measurement", exists = true }, { name = "device_class", in = ["power", "energy"] }] }
            [[rules]]
            name = "bright"
            action = "include"
            match = { attribute = [{ name = "brightness", gte = 100, lt = 200.5 }] }
            [[rules]]
            name = "model"
            action = "include"
            match = { attribute = [{ name = "model", regex = "^TRADFRI" }, { name = "count", equals = 3 }] }
            "#,
        );
        let rows = [
            (
                "unit and class in the list",
                json!({"unit_of_measurement": "W", "device_class": "power"}),
                "sensor.p",
                true,
            ),
            (
                "class not in the list",
                json!({"unit_of_measurement": "W", "device_class": "humidity"}),
                "sensor.p",
                false,
            ),
            (
                "no unit",
                json!({"device_class": "power"}),
                "sensor.p",
                false,
            ),
            ("gte bound", json!({"brightness": 100}), "light.a", true),
            (
                "numeric text",
                json!({"brightness": "150"}),
                "light.a",
                true,
            ),
            ("lt bound", json!({"brightness": 200.5}), "light.a", false),
            (
                "text is not a number",
                json!({"brightness": "dim"}),
                "light.a",
                false,
            ),
            (
                "3 equals 3.0",
                json!({"model": "TRADFRI bulb", "count": 3.0}),
                "light.b",
                true,
            ),
            (
                "text is not a number for equals",
                json!({"model": "TRADFRI bulb", "count": "3"}),
                "light.b",
                false,
            ),
            (
                "regex fails",
                json!({"model": "Hue", "count": 3}),
                "light.b",
                false,
            ),
        ];
        let rows: Vec<(&str, Event, bool)> = rows
            .into_iter()
            .map(|(name, attributes, id, keep)| {
                let value = if id.starts_with("sensor.") { "1" } else { "on" };
                (name, sensor(id, value, attributes), keep)
            })
            .collect();
        assert_rows(&mut c, &rows);
    }

    #[test]
    fn attribute_absent_and_on_the_old_state() {
        let mut c = chain(
            r#"
            default = "exclude"
            [[rules]]
            name = "no unit"
            action = "include"
            match = { attribute = [{ name = "unit_of_measurement", exists = false }] }
            [[rules]]
            name = "was heating"
            action = "include"
            match = { attribute = [{ name = "hvac_action", equals = "heating", on = "old" }, { name = "hvac_action", equals = "idle" }] }
            "#,
        );
        assert!(kept(&mut c, &sensor("sensor.x", "1", json!({}))));
        let mut e = state_event(
            "climate.a",
            "heat",
            json!({"unit_of_measurement": "°C", "hvac_action": "idle"}),
            Some("heat"),
        );
        assert!(!kept(&mut c, &e), "old state has the same attributes: idle");
        if let crate::event::EventKind::StateChanged(sc) = &mut e.kind {
            let old = state_event(
                "climate.a",
                "heat",
                json!({"unit_of_measurement": "°C", "hvac_action": "heating"}),
                None,
            );
            let old_state = old.state_changed().and_then(|s| s.new_state.clone());
            sc.old_state = old_state.map(crate::event::LazyState::from);
        }
        assert_eq!(decide(&mut c, &e).by, DecidedBy::Rule(1));
    }

    #[test]
    fn state_tests() {
        let mut c = chain(
            r#"
            default = "exclude"
            [[rules]]
            name = "power above zero"
            action = "include"
            match = { domain = ["sensor"], state = { gt = 0 } }
            [[rules]]
            name = "doors"
            action = "include"
            match = { domain = ["binary_sensor"], state = { in = ["on", "off"] } }
            [[rules]]
            name = "home"
            action = "include"
            match = { domain = ["person"], state = { equals = "home", lte = 5 } }
            "#,
        );
        let rows: Vec<(&str, Event, bool)> = [
            ("above zero", "sensor.p", "12.5", true),
            ("zero is not above zero", "sensor.p", "0", false),
            ("not a number", "sensor.p", "unavailable", false),
            ("in the list", "binary_sensor.d", "off", true),
            ("not in the list", "binary_sensor.d", "unknown", false),
            ("home is not a number", "person.a", "home", false),
        ]
        .into_iter()
        .map(|(name, id, value, keep)| (name, sensor(id, value, json!({})), keep))
        .collect();
        assert_rows(&mut c, &rows);
    }

    #[test]
    fn state_changed_and_attributes_only_changed() {
        let mut c = chain(
            r#"
            [[rules]]
            name = "attribute-only updates"
            action = "exclude"
            match = { state = { attributes_only_changed = true } }
            [[rules]]
            name = "same state"
            action = "exclude"
            match = { state = { changed = false } }
            "#,
        );
        let changed = state_event("sensor.a", "2", json!({"x": 1}), Some("1"));
        let first = state_event("sensor.a", "2", json!({"x": 1}), None);
        let same = state_event("sensor.a", "2", json!({"x": 1}), Some("2"));
        assert!(kept(&mut c, &changed));
        assert!(kept(&mut c, &first), "no old state counts as a change");
        assert_eq!(
            decide(&mut c, &same).by,
            DecidedBy::Rule(1),
            "same state, same attributes"
        );
        let mut attrs = state_event("sensor.a", "2", json!({"x": 2}), None);
        if let crate::event::EventKind::StateChanged(sc) = &mut attrs.kind {
            let before = state_event("sensor.a", "2", json!({"x": 1}), None);
            sc.old_state = before
                .state_changed()
                .and_then(|s| s.new_state.clone())
                .map(Into::into);
        }
        assert_eq!(decide(&mut c, &attrs).by, DecidedBy::Rule(0));
    }

    #[test]
    fn expression_and_its_errors() {
        let mut c = chain(
            r#"
            default = "exclude"
            [[rules]]
            name = "hot"
            action = "include"
            match = { domain = ["sensor"], expression = "state | float > 30" }
            [[rules]]
            name = "strict"
            action = "exclude"
            on_error = "keep"
            match = { domain = ["climate"], expression = "state | float > 30" }
            [[rules]]
            name = "catch-all"
            action = "include"
            match = { domain = ["sensor", "light"] }
            "#,
        );
        assert_eq!(
            decide(&mut c, &sensor("sensor.t", "31", json!({}))).by,
            DecidedBy::Rule(0)
        );
        // float fails on text: on_error = skip, so the chain goes on to the catch-all.
        assert_eq!(
            decide(&mut c, &sensor("sensor.t", "n/a", json!({}))).by,
            DecidedBy::Rule(2)
        );
        assert_eq!(
            decide(&mut c, &sensor("climate.t", "n/a", json!({}))),
            Decision {
                keep: true,
                by: DecidedBy::RuleError(1)
            }
        );
        assert!(!kept(&mut c, &sensor("climate.t", "35", json!({}))));
        // Each decide ran twice (cached and uncached).
        assert_eq!(
            c.counts()[0],
            RuleCounts {
                matches: 2,
                errors: 2
            }
        );
        assert_eq!(
            c.counts()[1],
            RuleCounts {
                matches: 2,
                errors: 2
            }
        );
        let mut seen = Vec::new();
        c.drain_counts(|i, n| seen.push((i, n)));
        assert_eq!(seen.len(), 3);
        assert!(c.counts().iter().all(|n| *n == RuleCounts::default()));
    }

    #[test]
    fn cache_is_bounded_and_keys_include_the_source_only_when_needed() {
        let mut c = chain(
            r#"
            [[rules]]
            name = "x"
            action = "exclude"
            match = { domain = ["light"] }
            "#,
        );
        c.set_cache_limit(3);
        for i in 0..10 {
            assert!(
                !c.decide(&sensor(&format!("light.l{i}"), "on", json!({})))
                    .keep
            );
            assert!(c.cache_len() <= 3);
        }
        let mut c = chain(
            r#"
            [[rules]]
            name = "sim"
            action = "exclude"
            match = { source = ["simulator"], domain = ["light"] }
            "#,
        );
        let ha = sensor("light.a", "on", json!({}));
        let mut sim = ha.clone();
        sim.source = "simulator".into();
        assert!(c.decide(&ha).keep);
        assert!(
            !c.decide(&sim).keep,
            "a cached plan for one source is not reused for another"
        );
        assert_eq!(c.cache_len(), 2);
    }

    #[test]
    fn a_full_cache_evicts_plans_not_used_lately_and_keeps_the_busy_ones() {
        let mut c = chain(
            r#"
            [[rules]]
            name = "x"
            action = "exclude"
            match = { domain = ["light"] }
            "#,
        );
        c.set_cache_limit(4);
        let e = |i: usize| sensor(&format!("light.l{i}"), "on", json!({}));
        for i in 0..4 {
            c.decide(&e(i));
        }
        // l0 and l1 are busy; l4 must evict one of the idle ones (l2 or l3).
        c.decide(&e(0));
        c.decide(&e(1));
        c.decide(&e(4));
        assert_eq!(c.cache_len(), 4);
        let key = |i: usize| {
            let id = format!("light.l{i}");
            format!("13:state_changed{}:{id}", id.len())
        };
        for i in [0, 1, 4] {
            assert!(c.cache.contains_key(key(i).as_str()), "{i}: {:?}", c.clock);
        }
        assert_eq!(c.clock.len(), 4);
        // Ring and map hold the same keys.
        for k in &c.clock {
            assert!(c.cache.contains_key(k));
        }
        // A long run of new entities keeps it bounded and consistent.
        for i in 5..200 {
            assert!(!c.decide(&e(i)).keep);
            assert!(c.cache_len() <= 4);
        }
        for k in &c.clock {
            assert!(c.cache.contains_key(k));
        }
    }

    #[test]
    fn crafted_event_types_do_not_share_a_cache_key_with_state_changes() {
        let mut c = chain(
            r#"
            [[rules]]
            name = "no lights"
            action = "exclude"
            match = { domain = ["light"] }
            "#,
        );
        let light = sensor("light.a", "on", json!({}));
        for crafted in [
            "state_changed\0light.a",
            "state_changed13:light.a",
            "state_changed",
        ] {
            let bus = bus_event(crafted);
            assert_eq!(decide(&mut c, &bus).by, DecidedBy::Default, "{crafted:?}");
            assert_eq!(decide(&mut c, &light).by, DecidedBy::Rule(0), "{crafted:?}");
        }
    }

    #[test]
    fn time_rules_run_per_event_and_use_the_configured_zone() {
        let mut c = chain(
            r#"
            time_zone = "Europe/Berlin"
            [[rules]]
            name = "quiet night"
            action = "exclude"
            match = { domain = ["sensor"], time = { after = "22:00", before = "06:00" } }
            [[rules]]
            name = "utc morning"
            action = "exclude"
            match = { domain = ["light"], time = { after = "08:00", before = "09:00", time_zone = "UTC" } }
            "#,
        );
        let mut night = sensor("sensor.t", "1", json!({}));
        // 21:30 UTC in June is 23:30 in Berlin.
        night.time_fired = Timestamp::parse_rfc3339("2026-06-01T21:30:00.000000+00:00").unwrap();
        let mut day = night.clone();
        day.time_fired = Timestamp::parse_rfc3339("2026-06-01T12:00:00.000000+00:00").unwrap();
        assert_eq!(decide(&mut c, &night).by, DecidedBy::Rule(0));
        assert_eq!(
            decide(&mut c, &day).by,
            DecidedBy::Default,
            "same entity, cached plan, other time"
        );
        let mut light = sensor("light.a", "on", json!({}));
        light.time_fired = Timestamp::parse_rfc3339("2026-06-01T08:30:00.000000+00:00").unwrap();
        assert_eq!(decide(&mut c, &light).by, DecidedBy::Rule(1));
        let err = build_err(
            "time_zone = \"Nowhere/Land\"\n[[rules]]\nname = \"x\"\naction = \"exclude\"\n",
        );
        assert!(err.contains("filter.time_zone"), "{err}");
    }

    #[test]
    fn transform_rules_go_on_and_the_plan_lists_everything() {
        let mut c = chain(
            r#"
            default = "exclude"
            [[rules]]
            name = "tag sensors"
            action = "transform"
            match = { domain = ["sensor"] }
            transform = [{ tags = { kind = "sensor" } }]
            [[rules]]
            name = "hot"
            action = "include"
            match = { domain = ["sensor"], state = { gt = 30 } }
            transform = [{ measurement = "hot" }]
            rate = { throttle = "10s", aggregate = "max" }
            "#,
        );
        let hot = sensor("sensor.t", "35", json!({}));
        assert_eq!(decide(&mut c, &hot).by, DecidedBy::Rule(1));
        assert_eq!(c.applied(), [0, 1]);
        assert_eq!(c.rate_rule(), Some(1));
        let cold = sensor("sensor.t", "5", json!({}));
        assert_eq!(
            decide(&mut c, &cold),
            Decision {
                keep: false,
                by: DecidedBy::Default
            },
            "a transform rule never decides"
        );
        let light = sensor("light.a", "on", json!({}));
        decide(&mut c, &light);
        assert!(c.applied().is_empty());
        let plan = c.plan_text().join("\n");
        for want in [
            "gate: none",
            "rule 1 \"tag sensors\": transform when {\"domain\":[\"sensor\"]}",
            "then tags kind=sensor",
            "rule 2 \"hot\": include when",
            "dynamic: tests run per event",
            "then measurement hot",
            "then rate: throttle 10s (Max)",
            "default: exclude",
        ] {
            assert!(plan.contains(want), "{want:?} not in\n{plan}");
        }
        assert_eq!(
            build_err("default = \"transform\""),
            RuleError::Default.to_string()
        );
        for (body, key) in [
            (
                "action = \"exclude\"\ntransform = [{ measurement = \"m\" }]",
                "transform",
            ),
            ("action = \"transform\"", "transform"),
            ("action = \"exclude\"\nrate = { throttle = \"1s\" }", "rate"),
            (
                "action = \"include\"\nrate = { throttle = \"0s\" }",
                "rate.throttle",
            ),
            (
                "action = \"include\"\ntransform = [{ convert = \"state\" }]",
                "transform[0].to",
            ),
            (
                "action = \"include\"\nmatch = { event_type = [\"call_service\"] }\ntransform = [{ tags = { a = \"b\" } }, { convert = \"state\", to = \"float\" }]",
                "transform[1].convert",
            ),
            (
                "action = \"transform\"\nmatch = { domain = [\"light\"] }\ntransform = [{ drop_data = [\"x\"] }]",
                "transform[0].drop_data",
            ),
            (
                "action = \"transform\"\nmatch = { event_type = [\"state_changed\"] }\ntransform = [{ keep_data = [\"x\"] }]",
                "transform[0].keep_data",
            ),
        ] {
            let err = build_err(&format!("[[rules]]\nname = \"r1\"\n{body}\n"));
            assert!(err.contains("\"r1\""), "{err}");
            assert!(err.contains(&format!("{key}:")), "{key}: {err}");
        }
        // Steps each kind of event can take, on matches that can select it, build.
        chain(
            r#"
            [[rules]]
            name = "service calls"
            action = "transform"
            match = { event_type = ["call_*"] }
            transform = [{ drop_data = ["*_id"] }, { measurement = "calls" }]
            [[rules]]
            name = "everything"
            action = "transform"
            transform = [{ drop_data = ["x"] }, { drop_attributes = ["icon"] }, { tags = { a = "b" } }]
            "#,
        );
    }

    #[test]
    fn no_rules_means_the_gate_alone() {
        let mut c = chain("[exclude]\ndomains = [\"light\"]\n");
        assert!(!c.decide(&sensor("light.a", "on", json!({}))).keep);
        assert!(c.decide(&sensor("sensor.a", "on", json!({}))).keep);
        assert_eq!(c.cache_len(), 0);
    }

    #[test]
    fn invalid_rules_name_the_rule_and_the_key() {
        let cases = [
            (
                r#"match = { entity = { regex = ["(unclosed"] } }"#,
                "match.entity.regex",
            ),
            (
                r#"match = { entity = { glob = ["sensor.[x"] } }"#,
                "match.entity.glob",
            ),
            (r#"match = { entity = {} }"#, "match.entity"),
            (
                r#"match = { event_type = ["call_[x"] }"#,
                "match.event_type",
            ),
            (
                r#"match = { attribute = [{ name = "a", regex = "(" }] }"#,
                "match.attribute.regex",
            ),
            (
                r#"match = { attribute = [{ name = "a" }] }"#,
                "match.attribute",
            ),
            (r#"match = { state = {} }"#, "match.state"),
            (r#"match = { expression = "state >" }"#, "match.expression"),
            (
                r#"match = { expression = "sate == 1" }"#,
                "match.expression",
            ),
            (r#"match = { time = {} }"#, "match.time"),
            (r#"match = { time = { after = "7pm" } }"#, "match.time"),
            (
                r#"match = { time = { weekdays = ["someday"] } }"#,
                "match.time",
            ),
            (
                r#"match = { time = { after = "07:00", time_zone = "Europe/Nowhere" } }"#,
                "match.time.time_zone",
            ),
        ];
        for (body, key) in cases {
            let text = format!("[[rules]]\nname = \"bad one\"\naction = \"exclude\"\n{body}\n");
            let err = build_err(&text);
            assert!(err.contains("\"bad one\""), "{err}");
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn unknown_keys_name_the_rule() {
        for (body, key) in [
            ("actoin = \"exclude\"", "actoin"),
            (
                "action = \"exclude\"\nmatch = { domian = [\"x\"] }",
                "domian",
            ),
            (
                "action = \"exclude\"\nmatch = { state = { chnaged = true } }",
                "chnaged",
            ),
            ("action = \"drop\"", "drop"),
        ] {
            let text = format!("[[rules]]\nname = \"typo rule\"\n{body}\n");
            let err = toml::from_str::<FilterConfig>(&text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"typo rule\""), "{err}");
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = toml::from_str::<FilterConfig>("[[rules]]\naction = \"exclude\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a name"), "{err}");
    }
}

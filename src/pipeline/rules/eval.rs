//! Applying the compiled chain to one event: the hot path.
//!
//! [`RuleChain::decide`] builds the cache key (the event type and entity id,
//! length-prefixed, and the source when a rule tests it) and follows the cached
//! [`Plan`]; on a miss it evaluates the gate and the static parts once, decides,
//! and caches the plan, CLOCK-evicting one not used lately when the cache is
//! full. Per event only the candidates' dynamic parts run; one event in
//! [`TIME_SAMPLE`] has each of them timed. [`RuleChain::decide_uncached`] runs
//! every rule in full: the reference the cache must agree with. The steps of the
//! rules that matched run afterwards on the kept event
//! ([`RuleChain::apply_transforms`]).

use super::compile::Rule;
use super::matcher::{Eval, dynamic_holds, static_holds};
use super::{DecidedBy, Decision, RuleChain, RuleCounts, TIME_SAMPLE, TIME_SAMPLES_KEPT};
use crate::config::OnError;
use crate::encode::PointOverrides;
use crate::event::Event;

/// What the static parts decided for one (event type, entity, source).
#[derive(Debug, Clone)]
pub(super) enum Plan {
    /// The gate drops it.
    Gate,
    /// Run the dynamic parts of `candidates` in order, then `terminal` (a fully static rule) or the default.
    Chain {
        candidates: Box<[u32]>,
        terminal: Option<u32>,
    },
}

impl RuleChain {
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

//! Turning `[filter]` into the compiled chain: globs, regexes, expressions, time
//! windows, transform steps and rates are compiled once, when the chain is built;
//! every mistake is a [`RuleError`] that names the rule and the key.
//!
//! What a rule's match can select decides which steps it may carry: a step on
//! an entity's state needs a match that can select state changes, a step on an
//! event's data one that can select other events. A rule with no attribute,
//! state, expression or time test is *static*: the cache decides it once per
//! entity (see `eval.rs`).

use std::collections::HashMap;

use globset::GlobSet;
use regex::{Regex, RegexSet};

use super::matcher::{AttributeTest, DynamicMatch, Range, StateTest, StaticMatch};
use super::{CACHE_LIMIT, RuleChain, RuleCounts, RuleError, RuleOutcomes};
use crate::config::{
    AttributeMatchConfig, FilterAction, FilterConfig, FilterRuleConfig, OnError, StateMatchConfig,
};
use crate::pipeline::expression::EventExpression;
use crate::pipeline::filter::{EntityFilter, glob_set};
use crate::pipeline::rate::RateSpec;
use crate::pipeline::time_window::{TimeWindow, parse_zone};
use crate::pipeline::transform::Transform;

/// One rule of `[[filter.rules]]`, compiled: its action, its match split in static and dynamic parts, its steps.
pub(super) struct Rule {
    pub(super) name: String,
    pub(super) keep: bool,
    /// `action = "transform"`: apply the steps and go on down the chain.
    pub(super) transform_only: bool,
    /// The steps, when the rule has any.
    pub(super) transform: Option<Transform>,
    /// The match as written, compact, for the plan.
    pub(super) match_text: String,
    /// The rule's `rate`, described; `Some` when it has one.
    pub(super) rate_text: Option<String>,
    pub(super) on_error: OnError,
    pub(super) fixed: StaticMatch,
    pub(super) dynamic: DynamicMatch,
    pub(super) is_static: bool,
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

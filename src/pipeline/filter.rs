//! Include/exclude by domain, entity and glob, with Home Assistant's own semantics.
//!
//! HA users already know how `include`/`exclude` behave in `recorder`,
//! `influxdb` and `mqtt_statestream` (`homeassistant/helpers/entityfilter.py`),
//! so this filter decides exactly as they do, case by case:
//!
//! 1. neither include nor exclude: keep everything;
//! 2. only include: keep listed entities, listed domains and glob matches;
//! 3. only exclude: drop listed entities, listed domains and glob matches;
//! 4. include has domains or globs: include-entity → keep, exclude-entity → drop,
//!    include-glob → keep, exclude-glob → drop, include-domain → keep, else drop;
//! 5. exclude has domains or globs (include has neither): drop when the domain
//!    or an exclude glob matches unless the entity is include-listed; else keep
//!    unless exclude-listed;
//! 6. otherwise (entity lists only): keep only include-listed entities.
//!
//! Events other than `state_changed` are filtered by type only:
//! `exclude.event_types` drops a type and a non-empty `include.event_types`
//! keeps only the listed types (list `state_changed` there to keep state changes).

use std::collections::HashSet;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::{EntityFilterConfig, FilterConfig};
use crate::event::Event;

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A glob did not compile.
    #[error("filter.{side}.entity_globs: bad glob {glob:?}: {source}")]
    Glob {
        /// `include` or `exclude`.
        side: &'static str,
        /// The glob.
        glob: String,
        /// The parser's error.
        source: globset::Error,
    },
}

/// Compiles `globs` into one set: the gate's and the rules' globs are built alike.
///
/// The error's [`globset::Error::glob`] names the glob at fault; it is `None`
/// only when the set as a whole does not build.
pub(crate) fn glob_set(globs: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob)?);
    }
    builder.build()
}

struct Side {
    domains: HashSet<String>,
    entities: HashSet<String>,
    globs: GlobSet,
    event_types: HashSet<String>,
}

impl Side {
    fn build(side: &'static str, cfg: &EntityFilterConfig) -> Result<Side, FilterError> {
        let globs = glob_set(&cfg.entity_globs).map_err(|source| FilterError::Glob {
            side,
            glob: source
                .glob()
                .map_or_else(|| cfg.entity_globs.join(", "), str::to_string),
            source,
        })?;
        Ok(Side {
            domains: cfg.domains.iter().cloned().collect(),
            entities: cfg.entities.iter().cloned().collect(),
            globs,
            event_types: cfg.event_types.iter().cloned().collect(),
        })
    }

    fn has_globs(&self) -> bool {
        !self.globs.is_empty()
    }

    fn has_entity_rules(&self) -> bool {
        !self.domains.is_empty() || !self.entities.is_empty() || self.has_globs()
    }
}

/// The compiled filter: built once at start-up, consulted per event.
pub struct EntityFilter {
    include: Side,
    exclude: Side,
}

impl EntityFilter {
    /// Compiles every glob once; fails early on a bad one.
    pub fn new(cfg: &FilterConfig) -> Result<EntityFilter, FilterError> {
        Ok(EntityFilter {
            include: Side::build("include", &cfg.include)?,
            exclude: Side::build("exclude", &cfg.exclude)?,
        })
    }

    /// Whether the event is kept.
    pub fn keep(&self, event: &Event) -> bool {
        let event_type = event.event_type();
        if self.exclude.event_types.contains(event_type) {
            return false;
        }
        if !self.include.event_types.is_empty() && !self.include.event_types.contains(event_type) {
            return false;
        }
        // Only a state change has an entity id.
        match event.entity_id() {
            Some(id) => self.keep_entity(id.as_str(), id.domain()),
            None => true,
        }
    }

    /// HA's `convert_include_exclude_filter` decision for one entity.
    pub fn keep_entity(&self, entity_id: &str, domain: &str) -> bool {
        let inc = &self.include;
        let exc = &self.exclude;
        let have_include = inc.has_entity_rules();
        let have_exclude = exc.has_entity_rules();
        if !have_include && !have_exclude {
            return true;
        }
        let include_glob = || inc.has_globs() && inc.globs.is_match(entity_id);
        let exclude_glob = || exc.has_globs() && exc.globs.is_match(entity_id);
        if have_include && !have_exclude {
            return inc.entities.contains(entity_id)
                || inc.domains.contains(domain)
                || include_glob();
        }
        if !have_include && have_exclude {
            return !(exc.entities.contains(entity_id)
                || exc.domains.contains(domain)
                || exclude_glob());
        }
        if !inc.domains.is_empty() || inc.has_globs() {
            if inc.entities.contains(entity_id) {
                return true;
            }
            if exc.entities.contains(entity_id) {
                return false;
            }
            if include_glob() {
                return true;
            }
            if exclude_glob() {
                return false;
            }
            return inc.domains.contains(domain);
        }
        if !exc.domains.is_empty() || exc.has_globs() {
            if exc.domains.contains(domain) || exclude_glob() {
                return inc.entities.contains(entity_id);
            }
            return !exc.entities.contains(entity_id);
        }
        inc.entities.contains(entity_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(domains: &[&str], entities: &[&str], globs: &[&str]) -> EntityFilterConfig {
        EntityFilterConfig {
            domains: domains.iter().map(|s| s.to_string()).collect(),
            entities: entities.iter().map(|s| s.to_string()).collect(),
            entity_globs: globs.iter().map(|s| s.to_string()).collect(),
            event_types: Vec::new(),
        }
    }

    fn keep(f: &EntityFilter, id: &str) -> bool {
        let domain = id.split('.').next().unwrap_or("");
        f.keep_entity(id, domain)
    }

    #[test]
    fn case1_no_rules_keeps_all() {
        let f = EntityFilter::new(&FilterConfig::default()).unwrap();
        assert!(keep(&f, "sensor.a"));
    }

    #[test]
    fn case2_include_only() {
        let f = EntityFilter::new(&FilterConfig {
            include: side(&["light"], &["sensor.kept"], &["switch.*_plug"]),
            exclude: EntityFilterConfig::default(),
            ..FilterConfig::default()
        })
        .unwrap();
        assert!(keep(&f, "light.bed"));
        assert!(keep(&f, "sensor.kept"));
        assert!(keep(&f, "switch.tv_plug"));
        assert!(!keep(&f, "sensor.other"));
        assert!(!keep(&f, "switch.tv"));
    }

    #[test]
    fn case3_exclude_only() {
        let f = EntityFilter::new(&FilterConfig {
            include: EntityFilterConfig::default(),
            exclude: side(&["automation"], &["sensor.noisy"], &["sensor.*_rssi"]),
            ..FilterConfig::default()
        })
        .unwrap();
        assert!(!keep(&f, "automation.x"));
        assert!(!keep(&f, "sensor.noisy"));
        assert!(!keep(&f, "sensor.plug_rssi"));
        assert!(keep(&f, "sensor.temp"));
    }

    #[test]
    fn case4_include_domains_with_excludes() {
        let f = EntityFilter::new(&FilterConfig {
            include: side(&["sensor"], &["light.kept"], &["binary_sensor.door_*"]),
            exclude: side(
                &[],
                &["sensor.noisy", "binary_sensor.door_x"],
                &["sensor.*_rssi"],
            ),
            ..FilterConfig::default()
        })
        .unwrap();
        assert!(keep(&f, "light.kept"), "include-entity wins");
        assert!(
            !keep(&f, "sensor.noisy"),
            "exclude-entity beats the include domain"
        );
        assert!(keep(&f, "binary_sensor.door_front"), "include glob");
        assert!(
            !keep(&f, "binary_sensor.door_x"),
            "exclude-entity beats the include glob"
        );
        assert!(
            !keep(&f, "sensor.wifi_rssi"),
            "exclude glob beats the include domain"
        );
        assert!(keep(&f, "sensor.temp"), "include domain");
        assert!(!keep(&f, "light.other"), "nothing matched");
    }

    #[test]
    fn case5_exclude_domains_with_include_entities() {
        let f = EntityFilter::new(&FilterConfig {
            include: side(&[], &["sensor.important"], &[]),
            exclude: side(&["sensor"], &["light.off"], &[]),
            ..FilterConfig::default()
        })
        .unwrap();
        assert!(keep(&f, "sensor.important"));
        assert!(!keep(&f, "sensor.other"));
        assert!(!keep(&f, "light.off"));
        assert!(keep(&f, "light.on"));
    }

    #[test]
    fn case6_entity_lists_only() {
        let f = EntityFilter::new(&FilterConfig {
            include: side(&[], &["sensor.a"], &[]),
            exclude: side(&[], &["sensor.b"], &[]),
            ..FilterConfig::default()
        })
        .unwrap();
        assert!(keep(&f, "sensor.a"));
        assert!(!keep(&f, "sensor.b"));
        assert!(!keep(&f, "sensor.c"));
    }

    #[test]
    fn bad_glob_is_refused_with_its_key() {
        let err = EntityFilter::new(&FilterConfig {
            include: side(&[], &[], &["sensor.[oops"]),
            exclude: EntityFilterConfig::default(),
            ..FilterConfig::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("filter.include.entity_globs"), "{err}");
    }
}

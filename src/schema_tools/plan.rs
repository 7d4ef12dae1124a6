//! `schema plan`: turns an [`Analysis`] into a configuration for the `optimized`
//! schema mode — a TOML snippet to paste — with each change's reason and its
//! expected effect on the series count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::analyze::{Analysis, DISPLAY_ONLY_ATTRIBUTES, MeasurementKind};
use crate::config::AttributeType;

/// Which finding a change answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Addresses {
    /// Unit- or entity-named measurements.
    MeasurementSprawl,
    /// A tag with high or churning cardinality.
    HighCardinalityTag,
    /// A field stored with two types.
    TypeConflict,
    /// `_str` twins and garbage numeric twins.
    StrTwins,
    /// Display-only or rarely useful attributes.
    CostlyFields,
}

/// One proposed change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The finding it answers.
    pub addresses: Addresses,
    /// Where (`measurement.field`, a tag, or the whole database).
    pub subject: String,
    /// The config it takes, as TOML.
    pub config: String,
    /// Why.
    pub reason: String,
    /// What it does to series (and fields).
    pub effect: String,
    /// Series affected now.
    pub series_before: u64,
    /// Series expected after.
    pub series_after: u64,
}

/// The plan: changes plus the snippet that applies them all.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Series in the database now.
    pub series_before: u64,
    /// Series expected with the snippet (one per entity, plus the events measurement's).
    pub series_after: u64,
    /// Measurements now.
    pub measurements_before: usize,
    /// Measurements expected with the snippet.
    pub measurements_after: usize,
    /// Each change.
    pub changes: Vec<Change>,
    /// The `[schema]` snippet to paste.
    pub toml: String,
}

/// Attributes kept as fields, with the type they are pinned to.
fn pinned_attributes(a: &Analysis) -> BTreeMap<String, &'static str> {
    let garbage: BTreeSet<&str> = a
        .str_twins
        .iter()
        .filter(|t| t.garbage > 0)
        .map(|t| t.attribute.as_str())
        .collect();
    let mut out = BTreeMap::new();
    for c in &a.type_conflicts {
        if is_state_field(&c.field) {
            continue;
        }
        // The type that holds most points wins; the rest are converted by `migrate`.
        let mut points: BTreeMap<&str, u64> = BTreeMap::new();
        for s in &c.shards {
            *points.entry(s.field_type.as_str()).or_default() += s.points;
        }
        let ty = points
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(t, _)| *t)
            .unwrap_or("string");
        out.insert(c.field.clone(), pin_name(ty));
    }
    for t in &a.str_twins {
        if DISPLAY_ONLY_ATTRIBUTES.contains(&t.attribute.as_str()) {
            continue;
        }
        // A text attribute whose numbers are garbage stays text; one that says a number is parsed honestly.
        let ty = if garbage.contains(t.attribute.as_str()) {
            "string"
        } else {
            "float"
        };
        out.entry(t.attribute.clone()).or_insert(ty);
    }
    // The optimized mode's default list, for the attributes this database has.
    for (k, ty) in crate::config::OptimizedSchemaConfig::default().attributes {
        if a.attributes.contains(&k) {
            let ty = match ty {
                AttributeType::Float => "float",
                AttributeType::String => "string",
                AttributeType::Boolean => "boolean",
            };
            out.entry(k).or_insert(ty);
        }
    }
    out
}

fn pin_name(influx_type: &str) -> &'static str {
    match influx_type {
        "float" | "integer" => "float",
        "boolean" => "boolean",
        _ => "string",
    }
}

fn is_state_field(field: &str) -> bool {
    matches!(field, "value" | "state")
}

/// Builds the plan from an analysis.
pub fn plan(a: &Analysis, events_measurement: &str) -> Plan {
    let mut changes = Vec::new();
    let entities = a.total_entities;
    let events_series = a
        .measurements
        .iter()
        .filter(|m| m.name == events_measurement)
        .map(|m| m.series)
        .sum::<u64>();
    let per_entity_measurements: Vec<_> = a
        .measurements
        .iter()
        .filter(|m| m.kind != MeasurementKind::Other)
        .collect();
    // One measurement per domain; a domain split by device class gives one per class
    // (plus one for its entities without a class, not counted: unknown from here).
    let domains = a
        .sprawl
        .domains
        .iter()
        .map(|d| {
            a.sprawl
                .device_classes
                .get(d)
                .map_or(1, |classes| classes.len().max(1))
        })
        .sum::<usize>()
        .max(1);

    if !per_entity_measurements.is_empty() {
        let before: u64 = per_entity_measurements.iter().map(|m| m.series).sum();
        let after: u64 = per_entity_measurements.iter().map(|m| m.entities).sum();
        changes.push(Change {
            addresses: Addresses::MeasurementSprawl,
            subject: format!(
                "{} unit-named and {} entity-named measurements",
                a.sprawl.unit_named.len(),
                a.sprawl.entity_named.len()
            ),
            config: "mode = \"optimized\"".into(),
            reason: "measurements named by unit or entity grow with every new unit and entity, \
                     and a query for one entity must know which unit it has; the optimized mode \
                     writes one measurement per domain with entity_id, domain, device_class and \
                     unit as tags"
                .into(),
            effect: format!(
                "measurements {} → about {domains} (one per domain: {}; sensors one per device class); one series per entity: {before} → {after}",
                per_entity_measurements.len(),
                a.sprawl.domains.join(", ")
            ),
            series_before: before,
            series_after: after,
        });
    }

    for h in &a.high_cardinality_tags {
        let after = h.entities.max(1).min(h.series);
        changes.push(Change {
            addresses: Addresses::HighCardinalityTag,
            subject: format!("{}.{}", h.measurement, h.key),
            config: format!(
                "tags_attributes without {:?} (it is kept as a string field)",
                h.key
            ),
            reason: format!(
                "{} distinct values for {} entities{}: every value is a new series, kept in the index forever",
                h.values,
                h.entities,
                if h.churning {
                    ", and the values keep changing"
                } else {
                    ""
                }
            ),
            effect: format!(
                "series of {}: {} → about {after} (one per entity)",
                h.measurement, h.series
            ),
            series_before: h.series,
            series_after: after,
        });
    }

    let pinned = pinned_attributes(a);
    for c in &a.type_conflicts {
        let config = if is_state_field(&c.field) {
            "mode = \"optimized\" (value is always a float, state always a string)".to_string()
        } else {
            format!(
                "[schema.optimized.attributes] {} = {:?}",
                toml_key(&c.field),
                pinned.get(&c.field).copied().unwrap_or("string")
            )
        };
        let series = a
            .measurements
            .iter()
            .find(|m| m.name == c.measurement)
            .map_or(0, |m| m.series);
        changes.push(Change {
            addresses: Addresses::TypeConflict,
            subject: format!("{}.{}", c.measurement, c.field),
            config,
            reason: format!(
                "stored as {} in different shards: queries over both return only one type, and \
                 writes of the other type into an existing shard are refused",
                c.types.join(" and ")
            ),
            effect: "no series change; the field gets one pinned type, so no new conflict; \
                     `schema migrate` converts the old points"
                .into(),
            series_before: series,
            series_after: series,
        });
    }

    let twins: Vec<_> = a.str_twins.iter().collect();
    if !twins.is_empty() {
        let garbage: Vec<String> = twins
            .iter()
            .filter(|t| t.garbage > 0)
            .map(|t| format!("{}.{}", t.measurement, t.attribute))
            .collect();
        changes.push(Change {
            addresses: Addresses::StrTwins,
            subject: format!("{} `_str` twins ({} with garbage numbers)", twins.len(), garbage.len()),
            config: "mode = \"optimized\" with [schema.optimized.attributes] pinning each kept attribute to one type".into(),
            reason: format!(
                "every text attribute is stored twice (text and HA's digits-only number); \
                 the number is garbage for {}",
                if garbage.is_empty() { "none sampled".to_string() } else { garbage.join(", ") }
            ),
            effect: format!("no series change; {} fewer fields per point that carried them", twins.len()),
            series_before: 0,
            series_after: 0,
        });
    }

    let display: BTreeSet<String> = a
        .costly_fields
        .iter()
        .flat_map(|c| c.display_only.iter())
        .map(|f| f.strip_suffix("_str").unwrap_or(f).to_string())
        .collect();
    if !display.is_empty() {
        changes.push(Change {
            addresses: Addresses::CostlyFields,
            subject: display.iter().cloned().collect::<Vec<_>>().join(", "),
            config:
                "left out of [schema.optimized.attributes] (only listed attributes are written)"
                    .into(),
            reason: "display-only attributes are written with every state change and never \
                     queried"
                .into(),
            effect: format!("no series change; {} fewer fields", display.len()),
            series_before: 0,
            series_after: 0,
        });
    }

    let series_after = entities + events_series;
    let measurements_after =
        domains + usize::from(a.measurements.iter().any(|m| m.name == events_measurement));
    let toml = snippet(a, &pinned, &changes);
    Plan {
        series_before: a.total_series,
        series_after,
        measurements_before: a.measurements.len(),
        measurements_after,
        changes,
        toml,
    }
}

fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn snippet(a: &Analysis, pinned: &BTreeMap<String, &'static str>, changes: &[Change]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Generated by `ha-ingestor schema plan` from database {:?}.",
        a.database
    );
    let _ = writeln!(
        t,
        "# Series now: {}; expected with this schema: about {}.",
        a.total_series,
        a.total_entities
            + a.measurements
                .iter()
                .filter(|m| m.kind == MeasurementKind::Other && m.entities == 0)
                .map(|m| m.series)
                .sum::<u64>()
    );
    let _ = writeln!(t, "[schema]");
    let _ = writeln!(t, "mode = \"optimized\"");
    let dropped: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.addresses == Addresses::HighCardinalityTag)
        .filter_map(|c| c.subject.rsplit_once('.').map(|(_, k)| k))
        .collect();
    if !dropped.is_empty() {
        let _ = writeln!(
            t,
            "# not tags any more (high cardinality): {}",
            dropped.iter().copied().collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(t, "tags_attributes = []");
    }
    let _ = writeln!(t, "\n[schema.optimized.attributes]");
    let _ = writeln!(
        t,
        "# Only these attributes are written, each with one type (no `_str` twins)."
    );
    for (k, ty) in pinned {
        let why = if a
            .type_conflicts
            .iter()
            .any(|c| &c.field == k && !is_state_field(k))
        {
            "  # had a type conflict"
        } else if a
            .str_twins
            .iter()
            .any(|s| &s.attribute == k && s.garbage > 0)
        {
            "  # its numeric twin was garbage"
        } else {
            ""
        };
        let _ = writeln!(t, "{} = \"{ty}\"{why}", toml_key(k));
    }
    t
}

impl Plan {
    /// The plan as text: each change, then the snippet.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "plan: series {} → about {}, measurements {} → {}",
            self.series_before,
            self.series_after,
            self.measurements_before,
            self.measurements_after
        );
        for (i, c) in self.changes.iter().enumerate() {
            let _ = writeln!(t, "\n{}. {:?}: {}", i + 1, c.addresses, c.subject);
            let _ = writeln!(t, "   change: {}", c.config);
            let _ = writeln!(t, "   why:    {}", c.reason);
            let _ = writeln!(t, "   effect: {}", c.effect);
        }
        let _ = writeln!(t, "\n--- paste into your config ---\n{}", self.toml);
        t
    }
}

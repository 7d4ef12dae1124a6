//! MQTT topic filters (`+`, `#`, `$share/<group>/…`) and per-subscription patterns with named captures.

/// Why a topic filter or pattern cannot be used, found when the decoders are built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The filter breaks MQTT's rules (empty, `#` not last, wildcard inside a level, bad `$share`).
    #[error("invalid topic filter {filter:?}: {reason}")]
    Filter {
        /// The filter as written.
        filter: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pattern does not compile.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The filter a broker matches against, without a `$share/<group>/` prefix.
pub fn strip_share(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    }
}

/// Checks a filter by MQTT's rules; returns the filter without its `$share` prefix.
pub fn validate_filter(filter: &str) -> Result<&str, TopicError> {
    let bad = |reason| TopicError::Filter {
        filter: filter.to_string(),
        reason,
    };
    if let Some(rest) = filter.strip_prefix("$share/") {
        match rest.split_once('/') {
            Some((group, f)) if !group.is_empty() && !f.is_empty() => {
                if group.contains(['+', '#']) {
                    return Err(bad("a share group name cannot hold a wildcard"));
                }
            }
            _ => return Err(bad("expected $share/<group>/<filter>")),
        }
    }
    let f = strip_share(filter);
    if f.is_empty() {
        return Err(bad("empty filter"));
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(bad("'#' must be a whole level and the last one"));
        }
        if level.contains('+') && *level != "+" {
            return Err(bad("'+' must be a whole level"));
        }
    }
    if f.contains('\0') {
        return Err(bad("NUL in filter"));
    }
    Ok(f)
}

/// Whether `topic` matches the (share-stripped, validated) `filter` by MQTT's rules.
///
/// A wildcard in the first level does not match topics starting with `$` (`$SYS/…`).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What a capture is used for; names outside this list become extra attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `entity_id`: the whole entity id (`domain.object_id`, or an object id given the subscription's domain).
    EntityId,
    /// `domain`: the entity's domain.
    Domain,
    /// `object_id`: the entity's object id (HA's `entity_id` tag).
    ObjectId,
    /// `device`: a device name (may contain `/`), slugged into the object id.
    Device,
    /// `attribute`: a statestream leaf, or a key appended to the device's object id.
    Attribute,
    /// Any other name: added as an attribute of that name (e.g. for `tags_attributes`).
    Extra,
}

impl Role {
    fn of(name: &str) -> Role {
        match name {
            "entity_id" => Role::EntityId,
            "domain" => Role::Domain,
            "object_id" => Role::ObjectId,
            "device" => Role::Device,
            "attribute" => Role::Attribute,
            _ => Role::Extra,
        }
    }
}

/// One captured part of a topic: which capture, and where in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    /// Index into [`Pattern::names`].
    pub name: usize,
    /// Byte range in the topic.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

/// One level of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Must equal this text.
    Literal(String),
    /// Any one level; `Some(i)` captures it as name `i`.
    One(Option<usize>),
    /// One or more levels (`{name+}`, or `#` for zero or more at the end).
    Many { name: Option<usize>, min: usize },
}

/// How a pattern matches.
#[derive(Debug, Clone)]
enum Kind {
    /// A template: levels matched front and back around at most one multi-level capture.
    Template(Vec<Level>),
    /// `regex:`: a regular expression with named groups.
    Regex(regex::Regex),
}

/// A compiled per-subscription pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    kind: Kind,
    names: Vec<(String, Role)>,
    /// The same pattern as a regex without captures, for the combined one-pass set.
    set_regex: String,
}

impl Pattern {
    /// Compiles a template (`zigbee2mqtt/{device+}`) or `regex:<expr>`.
    ///
    /// Template levels: a literal, `+` or `{name}` (exactly one level), `{name+}`
    /// (one or more levels, so names may contain `/`; at most one per template),
    /// `#` (the rest, last level only).
    pub fn compile(pattern: &str) -> Result<Pattern, TopicError> {
        let bad = |reason: String| TopicError::Pattern {
            pattern: pattern.to_string(),
            reason,
        };
        if let Some(expr) = pattern.strip_prefix("regex:") {
            let anchored = format!("^(?:{expr})$");
            let re = regex::Regex::new(&anchored).map_err(|e| bad(e.to_string()))?;
            let names: Vec<(String, Role)> = re
                .capture_names()
                .flatten()
                .map(|n| (n.to_string(), Role::of(n)))
                .collect();
            // The set only needs to know whether it matches: groups become non-capturing there.
            let set_regex = anchored;
            return Ok(Pattern {
                kind: Kind::Regex(re),
                names,
                set_regex,
            });
        }
        if pattern.is_empty() {
            return Err(bad("empty pattern".into()));
        }
        let mut names: Vec<(String, Role)> = Vec::new();
        let mut levels = Vec::new();
        let mut set_regex = String::from("^");
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut many_seen = false;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                set_regex.push('/');
            }
            let level = if *part == "+" {
                set_regex.push_str("[^/]*");
                Level::One(None)
            } else if *part == "#" {
                if i + 1 != parts.len() {
                    return Err(bad("'#' must be the last level".into()));
                }
                if many_seen {
                    return Err(bad("at most one multi-level capture or '#'".into()));
                }
                many_seen = true;
                // `a/#` also matches `a`: the slash before is optional.
                if i > 0 {
                    set_regex.pop();
                    set_regex.push_str("(?:/.*)?");
                } else {
                    set_regex.push_str(".*");
                }
                Level::Many { name: None, min: 0 }
            } else if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, many) = match inner.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(bad(format!(
                        "capture name {name:?} must be letters, digits or '_'"
                    )));
                }
                if names.iter().any(|(n, _)| n == name) {
                    return Err(bad(format!("capture {name:?} appears twice")));
                }
                names.push((name.to_string(), Role::of(name)));
                let idx = names.len() - 1;
                if many {
                    if many_seen {
                        return Err(bad("at most one multi-level capture or '#'".into()));
                    }
                    many_seen = true;
                    set_regex.push_str(".+");
                    Level::Many {
                        name: Some(idx),
                        min: 1,
                    }
                } else {
                    set_regex.push_str("[^/]+");
                    Level::One(Some(idx))
                }
            } else {
                if part.contains(['{', '}', '+', '#']) {
                    return Err(bad(format!(
                        "level {part:?}: a capture must be a whole level ({{name}} or {{name+}})"
                    )));
                }
                set_regex.push_str(&regex::escape(part));
                Level::Literal(part.to_string())
            };
            levels.push(level);
        }
        set_regex.push('$');
        Ok(Pattern {
            kind: Kind::Template(levels),
            names,
            set_regex,
        })
    }

    /// Capture names in order, with their roles.
    pub fn names(&self) -> &[(String, Role)] {
        &self.names
    }

    /// Matches `topic`, appending its captures to `out` (cleared first); `false` if it does not match.
    pub fn captures(
        &self,
        topic: &str,
        locs: &mut Option<regex::CaptureLocations>,
        out: &mut Vec<Capture>,
    ) -> bool {
        out.clear();
        match &self.kind {
            Kind::Template(levels) => match_template(levels, topic, out),
            Kind::Regex(re) => {
                let locs = locs.get_or_insert_with(|| re.capture_locations());
                if re.captures_read(locs, topic).is_none() {
                    return false;
                }
                // Group 0 is the whole match; named groups follow in order.
                let mut named = 0;
                for (group, name) in re.capture_names().enumerate() {
                    if name.is_none() {
                        continue;
                    }
                    if let Some((start, end)) = locs.get(group) {
                        out.push(Capture {
                            name: named,
                            start,
                            end,
                        });
                    }
                    named += 1;
                }
                true
            }
        }
    }
}

/// Matches levels from the front up to a multi-level part, then from the back.
fn match_template(levels: &[Level], topic: &str, out: &mut Vec<Capture>) -> bool {
    let bytes = topic.as_bytes();
    let mut pos = 0usize;
    let mut idx = 0usize;
    // Front: single levels until a multi-level part.
    while idx < levels.len() {
        if matches!(levels[idx], Level::Many { .. }) {
            break;
        }
        if pos > bytes.len() {
            return false;
        }
        let end = memchr_slash(bytes, pos).unwrap_or(bytes.len());
        let level = &topic[pos..end];
        match &levels[idx] {
            Level::Literal(text) => {
                if level != text {
                    return false;
                }
            }
            Level::One(name) => {
                if let Some(name) = name {
                    if level.is_empty() {
                        return false;
                    }
                    out.push(Capture {
                        name: *name,
                        start: pos,
                        end,
                    });
                }
            }
            Level::Many { .. } => return false,
        }
        idx += 1;
        // Past the end when the topic has no more levels.
        pos = end + 1;
    }
    if idx == levels.len() {
        return pos == bytes.len() + 1;
    }
    // Back: single levels after the multi-level part, from the end of the topic.
    let (name, min) = match levels[idx] {
        Level::Many { name, min } => (name, min),
        _ => return false,
    };
    let tail = &levels[idx + 1..];
    let mut end = bytes.len();
    for level in tail.iter().rev() {
        // The tail's levels need a slash before them that is at or after `pos`.
        let start = match memrchr_slash(&bytes[..end]) {
            Some(slash) if slash >= pos => slash + 1,
            _ => return false,
        };
        let text = &topic[start..end];
        match level {
            Level::Literal(lit) => {
                if text != lit {
                    return false;
                }
            }
            Level::One(name) => {
                if let Some(name) = name {
                    if text.is_empty() {
                        return false;
                    }
                    out.push(Capture {
                        name: *name,
                        start,
                        end,
                    });
                }
            }
            Level::Many { .. } => return false,
        }
        end = start - 1;
    }
    // What is left, `pos..end`, is the multi-level part.
    let rest_len = end.saturating_sub(pos);
    if min == 0 {
        // `#`: zero or more levels; `a/#` matches `a` too.
        if let Some(name) = name {
            out.push(Capture {
                name,
                start: pos.min(end),
                end,
            });
        }
    } else {
        if pos > bytes.len() || rest_len == 0 {
            return false;
        }
        if let Some(name) = name {
            out.push(Capture {
                name,
                start: pos,
                end,
            });
        }
    }
    true
}

fn memchr_slash(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .position(|&b| b == b'/')
        .map(|i| i + from)
}

fn memrchr_slash(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| b == b'/')
}

/// A filter as a regex for the combined set (MQTT rules, `$`-topics excluded from leading wildcards).
fn filter_regex(filter: &str) -> String {
    let mut re = String::from("^");
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "#" if i == 0 => re.push_str("(?:[^$].*)?"),
            "#" => re.push_str("(?:/.*)?"),
            "+" => {
                if i > 0 {
                    re.push('/');
                    re.push_str("[^/]*");
                } else {
                    re.push_str("(?:[^$/][^/]*)?");
                }
            }
            lit => {
                if i > 0 {
                    re.push('/');
                }
                re.push_str(&regex::escape(lit));
            }
        }
    }
    re.push('$');
    re
}

/// Every subscription's filter and pattern in one [`regex::RegexSet`]: one pass per topic.
#[derive(Debug, Clone)]
pub struct Router {
    set: regex::RegexSet,
    /// Per subscription: the set index of its pattern, if it has one (filters are `0..n`).
    pattern_slot: Vec<Option<usize>>,
}

impl Router {
    /// Builds the set from (share-stripped, validated) filters and optional patterns, in config order.
    pub fn new(entries: &[(&str, Option<&Pattern>)]) -> Result<Router, TopicError> {
        let mut regexes: Vec<String> = entries.iter().map(|(f, _)| filter_regex(f)).collect();
        let mut pattern_slot = Vec::with_capacity(entries.len());
        for (_, pattern) in entries {
            pattern_slot.push(pattern.map(|p| {
                regexes.push(p.set_regex.clone());
                regexes.len() - 1
            }));
        }
        let set = regex::RegexSetBuilder::new(&regexes)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| TopicError::Pattern {
                pattern: "(all subscriptions)".to_string(),
                reason: e.to_string(),
            })?;
        Ok(Router { set, pattern_slot })
    }

    /// The first subscription (config order) whose filter and pattern both match `topic`.
    pub fn route(&self, topic: &str) -> Option<usize> {
        let hits = self.set.matches(topic);
        if !hits.matched_any() {
            return None;
        }
        (0..self.pattern_slot.len()).find(|&i| {
            hits.matched(i) && self.pattern_slot[i].is_none_or(|slot| hits.matched(slot))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, topic: &str) -> Option<Vec<(String, String)>> {
        let pat = Pattern::compile(p).expect("pattern compiles");
        let mut out = Vec::new();
        let mut locs = None;
        if !pat.captures(topic, &mut locs, &mut out) {
            return None;
        }
        let mut v: Vec<(String, String)> = out
            .iter()
            .map(|c| {
                (
                    pat.names()[c.name].0.clone(),
                    topic[c.start..c.end].to_string(),
                )
            })
            .collect();
        v.sort();
        Some(v)
    }

    fn kv(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        Some(v)
    }

    #[test]
    fn filters_follow_mqtt_rules() {
        let cases = [
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a//c", true),
            ("a/+/c", "a/b/d", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "x/y", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("+", "a", true),
            ("+", "a/b", false),
            ("a/+", "a", false),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(filter_matches(filter, topic), want, "{filter} ~ {topic}");
            let router = Router::new(&[(filter, None)]).expect("router builds");
            assert_eq!(
                router.route(topic).is_some(),
                want,
                "set: {filter} ~ {topic}"
            );
        }
    }

    #[test]
    fn bad_filters_are_refused_and_share_is_stripped() {
        for bad in [
            "",
            "a/#/b",
            "a/b#",
            "a+/b",
            "$share/g",
            "$share//a",
            "$share/g+/a",
        ] {
            assert!(validate_filter(bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_filter("$share/grp/z2m/#"), Ok("z2m/#"));
        assert_eq!(strip_share("a/b"), "a/b");
    }

    #[test]
    fn templates_capture_levels_and_multi_level_names() {
        assert_eq!(
            caps("zigbee2mqtt/{device+}", "zigbee2mqtt/kitchen/floor_light"),
            kv(&[("device", "kitchen/floor_light")])
        );
        assert_eq!(
            caps(
                "zigbee2mqtt/{device+}/availability",
                "zigbee2mqtt/kitchen/floor light/availability"
            ),
            kv(&[("device", "kitchen/floor light")])
        );
        assert_eq!(
            caps(
                "zigbee2mqtt/{device+}/availability",
                "zigbee2mqtt/availability"
            ),
            None
        );
        assert_eq!(
            caps(
                "homeassistant_statestream/{domain}/{object_id}/{attribute}",
                "homeassistant_statestream/sensor/t/state"
            ),
            kv(&[
                ("attribute", "state"),
                ("domain", "sensor"),
                ("object_id", "t")
            ])
        );
        assert_eq!(
            caps(
                "home/{room}/+/{device+}/{attribute}",
                "home/hall/x/a/b/temp"
            ),
            kv(&[("attribute", "temp"), ("device", "a/b"), ("room", "hall")])
        );
        assert_eq!(caps("a/{x}", "a/"), None);
        assert_eq!(caps("a/{x}", "a"), None);
        assert_eq!(caps("a/{x}", "a/b/c"), None);
        assert_eq!(caps("a/{x+}", "a"), None);
        assert_eq!(caps("a/#", "a"), kv(&[]));
        assert_eq!(caps("a/#", "a/b/c"), kv(&[]));
        assert_eq!(caps("a/#", "b/c"), None);
    }

    #[test]
    fn regex_patterns_capture_named_groups() {
        assert_eq!(
            caps(r"regex:tele/(?P<device>[^/]+)/SENSOR", "tele/plug_1/SENSOR"),
            kv(&[("device", "plug_1")])
        );
        assert_eq!(
            caps(r"regex:tele/(?P<device>[^/]+)/SENSOR", "x/tele/p/SENSOR"),
            None
        );
        assert!(Pattern::compile("regex:(").is_err());
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "",
            "a/{x",
            "a/{x}{y}",
            "a/b{x}",
            "a/{}",
            "a/{x}/{x}",
            "a/{x+}/{y+}",
            "a/#/b",
            "a/{x+}/#",
            "a/{x-y}",
        ] {
            assert!(Pattern::compile(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_router_takes_the_first_subscription_whose_filter_and_pattern_match() {
        let avail = Pattern::compile("zigbee2mqtt/{device+}/availability").expect("compiles");
        let dev = Pattern::compile("zigbee2mqtt/{device+}").expect("compiles");
        let router = Router::new(&[
            ("zigbee2mqtt/bridge/#", None),
            ("zigbee2mqtt/#", Some(&avail)),
            ("zigbee2mqtt/#", Some(&dev)),
            ("other/+", None),
        ])
        .expect("router builds");
        assert_eq!(router.route("zigbee2mqtt/bridge/state"), Some(0));
        assert_eq!(router.route("zigbee2mqtt/a/b/availability"), Some(1));
        assert_eq!(router.route("zigbee2mqtt/a/b"), Some(2));
        assert_eq!(router.route("other/x"), Some(3));
        assert_eq!(router.route("other/x/y"), None);
        assert_eq!(router.route("zigbee2mqtt"), None);
    }
}

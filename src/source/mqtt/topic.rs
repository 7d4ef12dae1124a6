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

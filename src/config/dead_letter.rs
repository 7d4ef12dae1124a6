//! `[dead_letter]`: how much of each rejected input is kept, and how large the
//! dead-letter folder may grow before its oldest files are removed.

use serde::{Deserialize, Serialize};

/// Bounds of the dead-letter folder (`<data_dir>/dead-letter/`), so bad input cannot fill the disk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Bytes of each input kept; a longer one is cut and recorded with `"truncated": true` and its length.
    #[serde(default = "default_max_input_bytes")]
    pub max_input_bytes: usize,
    /// Largest total size of the dead-letter files; the oldest files are removed to stay below it.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_input_bytes() -> usize {
    64 * 1024
}
fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            max_input_bytes: default_max_input_bytes(),
            max_bytes: default_max_bytes(),
        }
    }
}

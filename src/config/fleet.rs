//! Fleets: `homes_dir` (a folder of home files, one `[homeassistant]` each) and
//! `[shard]` (which of the listed homes this replica runs).
//!
//! Every replica of a fleet reads the same list of homes; each runs only the
//! homes whose stable hash lands on its `index`. The hash is jump consistent
//! hashing (Lamping & Veach, 2014) of the 64-bit FNV-1a hash of the home's
//! name: both are fixed algorithms, so every build and every replica agree, and
//! when `count` grows from n to n+1 only about 1/(n+1) of the homes move, all
//! of them to the new index.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HomeAssistantConfig};

/// The variable a StatefulSet pod's name is in (`ha-ingestor-2`): the shard index when `shard.index` is not set.
pub const HOSTNAME_VAR: &str = "HOSTNAME";

/// `[shard]`: this replica's share of the fleet's homes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// This replica's index, `0..count`; unset: the number after the last `-` of `HOSTNAME` (a StatefulSet pod's ordinal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// How many replicas share the homes.
    pub count: u32,
    /// How far before the store's last point of a home a new owner resumes, covering points still in flight on the old owner's parallel lanes.
    #[serde(default = "default_resume_margin", with = "humantime_serde")]
    pub resume_margin: Duration,
}

fn default_resume_margin() -> Duration {
    Duration::from_secs(60)
}

/// The 64-bit FNV-1a hash of `bytes`: a fixed algorithm, so it is the same on every build.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash: the bucket `0..buckets` of `key`; growing `buckets` by one moves only keys to the new bucket.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // (key >> 33) + 1 is at most 2^31, so the quotient is in (0, 2^31 * (b + 1)].
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // b < buckets <= u32::MAX.
    u32::try_from(b).unwrap_or(0)
}

/// The shard (replica index) that runs the home named `name` among `count` replicas.
pub fn shard_of(name: &str, count: u32) -> u32 {
    jump_hash(fnv1a64(name.as_bytes()), count)
}

impl ShardConfig {
    /// Whether this replica runs the home named `name` (call after [`resolve_index`]).
    pub fn owns(&self, name: &str) -> bool {
        self.index == Some(shard_of(name, self.count))
    }
}

/// Sets `shard.index` from `HOSTNAME` when not set, and checks `index < count`.
pub(super) fn resolve_index(
    shard: &mut ShardConfig,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    if shard.count == 0 {
        return Err(invalid("shard.count", "must be at least 1".into()));
    }
    if shard.index.is_none() {
        let host = env
            .iter()
            .find(|(k, _)| k == HOSTNAME_VAR)
            .map(|(_, v)| v.as_str());
        let ordinal = host
            .and_then(|h| h.rsplit_once('-'))
            .and_then(|(_, n)| n.parse::<u32>().ok());
        match ordinal {
            Some(n) => shard.index = Some(n),
            None => {
                return Err(invalid(
                    "shard.index",
                    format!(
                        "not set, and {HOSTNAME_VAR} ({}) does not end in -<ordinal> as a StatefulSet pod's name does: set shard.index or HA_INGESTOR_SHARD__INDEX",
                        host.map_or_else(|| "unset".to_string(), |h| format!("{h:?}"))
                    ),
                ));
            }
        }
    }
    match shard.index {
        Some(i) if i < shard.count => Ok(()),
        Some(i) => Err(invalid(
            "shard.index",
            format!("{i} is not below shard.count ({})", shard.count),
        )),
        None => Ok(()),
    }
}

/// Reads every `*.toml` of `dir` (relative to `base`, the config's folder) as one home each,
/// in file-name order; a file without `name` is named by its stem, and its relative
/// `token_file` and TLS paths are taken from `dir`.
pub(super) fn read_homes_dir(
    dir: &Path,
    base: &Path,
) -> Result<Vec<HomeAssistantConfig>, ConfigError> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        base.join(dir)
    };
    let read_error = |path: &Path, source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| read_error(&dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut homes = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        let parse_error = |message: String| ConfigError::Parse {
            path: path.clone(),
            message,
        };
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| parse_error(super::secret::describe_toml_error(&text, &e)))?;
        if !table.contains_key("name") {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            table.insert("name".into(), toml::Value::String(stem));
        }
        let mut home = HomeAssistantConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_error(e.message().to_string()))?;
        if let Some(file) = home.token_file.as_mut().filter(|f| f.is_relative()) {
            *file = dir.join(&*file);
        }
        home.tls.resolve_paths(&dir);
        homes.push(home);
    }
    Ok(homes)
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_matches_the_papers_function() {
        // Values of the paper's C++ `JumpConsistentHash`, compiled and run.
        let cases: [(u64, [u32; 3]); 4] = [
            (1, [0, 0, 549]),
            (0xdead_beef, [1, 2, 285]),
            (0xcbf2_9ce4_8422_2325, [1, 1, 266]),
            (123_456_789, [0, 0, 294]),
        ];
        for (key, want) in cases {
            assert_eq!(
                [jump_hash(key, 2), jump_hash(key, 3), jump_hash(key, 1000)],
                want,
                "key {key}"
            );
        }
    }

    #[test]
    fn growing_the_count_moves_only_to_the_new_index_and_about_its_share() {
        let names: Vec<String> = (0..3000).map(|i| format!("home-{i:04}")).collect();
        for n in 1..8u32 {
            let mut moved = 0;
            for name in &names {
                let (before, after) = (shard_of(name, n), shard_of(name, n + 1));
                if before != after {
                    assert_eq!(
                        after, n,
                        "{name} moved {before} → {after}, not to the new index"
                    );
                    moved += 1;
                }
            }
            // Expected 3000/(n+1); allow a wide band, the point is "a share", not "all".
            let expected = names.len() as f64 / f64::from(n + 1);
            assert!(
                (moved as f64) > expected * 0.8 && (moved as f64) < expected * 1.2,
                "{n}→{}: {moved} of {} moved, expected about {expected}",
                n + 1,
                names.len()
            );
        }
    }

    #[test]
    fn the_index_comes_from_a_statefulset_pod_name_when_unset() {
        let mut shard = ShardConfig {
            index: None,
            count: 3,
            resume_margin: default_resume_margin(),
        };
        resolve_index(&mut shard, &[("HOSTNAME".into(), "ha-ingestor-2".into())]).unwrap();
        assert_eq!(shard.index, Some(2));

        let mut shard = ShardConfig {
            index: None,
            ..shard
        };
        let err = resolve_index(&mut shard, &[("HOSTNAME".into(), "laptop".into())]).unwrap_err();
        assert!(err.to_string().contains("shard.index"), "{err}");

        let mut shard = ShardConfig {
            index: None,
            ..shard
        };
        let err =
            resolve_index(&mut shard, &[("HOSTNAME".into(), "ha-ingestor-3".into())]).unwrap_err();
        assert!(err.to_string().contains("not below shard.count"), "{err}");
    }

    #[test]
    fn a_homes_dir_adds_one_home_per_file_and_the_shard_picks_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let homes = dir.path().join("homes.d");
        std::fs::create_dir(&homes).unwrap();
        std::fs::write(homes.join("token-b"), "tb\n").unwrap();
        std::fs::write(
            homes.join("a.toml"),
            "url = \"ws://127.0.0.1:1/api/websocket\"\ntoken = \"ta\"\n",
        )
        .unwrap();
        std::fs::write(
            homes.join("b.toml"),
            "name = \"beta\"\nurl = \"ws://127.0.0.1:2/api/websocket\"\ntoken_file = \"token-b\"\n",
        )
        .unwrap();
        std::fs::write(homes.join("README"), "not a home").unwrap();
        let text = "homes_dir = \"homes.d\"\n[[homeassistant]]\nname = \"inline\"\nurl = \"ws://127.0.0.1:3/api/websocket\"\ntoken = \"ti\"\n[shard]\ncount = 2\n";
        let path = dir.path().join("c.toml");
        let env = |index: &str| vec![("HA_INGESTOR_SHARD__INDEX".to_string(), index.to_string())];
        let cfg = super::super::Config::from_toml_with_env(text, &path, &env("1")).unwrap();
        let names: Vec<&str> = cfg.homeassistant.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["inline", "a", "beta"]);
        assert_eq!(cfg.homeassistant[2].token.as_deref(), Some("tb"));
        assert_eq!(cfg.shard.as_ref().and_then(|s| s.index), Some(1));
        // Every home is run by exactly one of the two replicas.
        let other = super::super::Config::from_toml_with_env(text, &path, &env("0")).unwrap();
        let mut all: Vec<&str> = cfg
            .owned_homes()
            .chain(other.owned_homes())
            .map(|h| h.name.as_str())
            .collect();
        all.sort_unstable();
        assert_eq!(all, ["a", "beta", "inline"]);
        // The instance tag is on for every replica, whatever its share.
        assert_eq!(
            cfg.effective_schema().instance_tag.as_deref(),
            Some("instance")
        );

        // A home named twice (inline and by a file) is refused.
        std::fs::write(
            homes.join("inline.toml"),
            "url = \"ws://127.0.0.1:4/api/websocket\"\ntoken = \"t\"\n",
        )
        .unwrap();
        let err = super::super::Config::from_toml_with_env(text, &path, &env("0")).unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
    }
}

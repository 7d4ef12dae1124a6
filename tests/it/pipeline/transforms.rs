//! Transforms end to end: golden cases of input events + config → expected line protocol.
//!
//! Each folder of `tests/data/transforms/` holds `config.toml`, `input.jsonl`
//! (HA events, one per line) and `expected.lp` (what the pipeline writes for
//! them, in order; a line `# dropped <n>` stands for an event that gives no point).

use std::path::Path;

use ha_ingestor::cli::explain::event_from_json;
use ha_ingestor::config::Config;
use ha_ingestor::pipeline::{Outcome, Pipeline};

fn run_case(dir: &Path) -> (String, String) {
    let config_path = dir.join("config.toml");
    let cfg = Config::from_toml_with_env(
        &std::fs::read_to_string(&config_path).expect("config.toml"),
        &config_path,
        &[],
    )
    .expect("config is valid");
    let mut pipeline = Pipeline::new(&cfg.filter, &cfg.schema).expect("pipeline builds");
    let input = std::fs::read_to_string(dir.join("input.jsonl")).expect("input.jsonl");
    let mut actual = String::new();
    for (n, line) in input.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let event = event_from_json(line, "homeassistant").expect("input event decodes");
        let mut out = String::new();
        match pipeline.process(&event, &mut out) {
            Outcome::Points(_) => actual.push_str(&out),
            _ => {
                actual.push_str(&format!("# dropped {}\n", n + 1));
            }
        }
    }
    let expected = std::fs::read_to_string(dir.join("expected.lp")).expect("expected.lp");
    (actual, expected)
}

#[test]
fn golden_transform_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/transforms");
    let mut cases = 0;
    for entry in std::fs::read_dir(&root).expect("tests/data/transforms") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let (actual, expected) = run_case(&dir);
        let actual_lines: Vec<&str> = actual.lines().collect();
        let expected_lines: Vec<&str> = expected.lines().collect();
        for (i, (a, e)) in actual_lines.iter().zip(&expected_lines).enumerate() {
            assert_eq!(a, e, "{} line {}", dir.display(), i + 1);
        }
        assert_eq!(
            actual_lines.len(),
            expected_lines.len(),
            "{}: line count\n{actual}",
            dir.display()
        );
        cases += 1;
    }
    assert!(cases >= 1, "no golden cases found");
}

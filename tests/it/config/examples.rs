//! Every file in `examples/` parses and validates, and `full.toml` sets every key.

use std::path::Path;

use ha_ingestor::config::Config;

fn load(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example exists");
    match Config::from_toml_with_env(&text, &path, &[]) {
        Ok(c) => c,
        // minimal.toml names a token file that only exists on a real install.
        Err(ha_ingestor::config::ConfigError::Secret { .. }) if name == "minimal.toml" => {
            let text = text.replace("token_file = \"/run/secrets/ha_token\"", "token = \"t\"");
            Config::from_toml_with_env(&text, &path, &[]).expect("minimal.toml is valid")
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn every_example_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load(path.file_name().unwrap().to_str().unwrap());
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example configs, found {n}");
}

/// Every key of the config tree appears in full.toml (commented or not), so the example documents them all.
#[test]
fn full_example_mentions_every_key() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/full.toml"))
            .unwrap();
    let mut cfg = load("full.toml");
    // Fill the optional sections so serialisation lists their keys.
    if let Some(i) = cfg.influxdb.as_mut() {
        i.org = Some("o".into());
        i.bucket = Some("b".into());
        i.retention_policy = Some("r".into());
        i.password_file = Some("p".into());
        i.token_file = Some("t".into());
    }
    for h in cfg.homeassistant.iter_mut() {
        h.token_file = Some("t".into());
    }
    let value = toml::Value::try_from(&cfg).unwrap();
    let mut missing = Vec::new();
    collect_keys(&value, &mut Vec::new(), &mut missing, &text);
    assert!(
        missing.is_empty(),
        "keys not in examples/full.toml: {missing:?}"
    );
}

fn collect_keys(v: &toml::Value, path: &mut Vec<String>, missing: &mut Vec<String>, text: &str) {
    if let toml::Value::Table(t) = v {
        for (k, child) in t {
            // Map-valued sections keyed by user data (tags, component_config) are not keys.
            let user_keyed = matches!(
                path.last().map(String::as_str),
                Some(
                    "tags"
                        | "component_config"
                        | "component_config_domain"
                        | "component_config_glob"
                )
            );
            if !user_keyed
                && !text.contains(&format!("{k} ="))
                && !text.contains(&format!("[{}", path_with(path, k)))
                && !text.contains(&format!(".{k}]"))
            {
                missing.push(path_with(path, k));
            }
            path.push(k.clone());
            collect_keys(child, path, missing, text);
            path.pop();
        }
    }
}

fn path_with(path: &[String], k: &str) -> String {
    let mut p = path.to_vec();
    p.push(k.to_string());
    p.join(".")
}

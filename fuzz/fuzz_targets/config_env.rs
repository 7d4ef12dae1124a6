//! Config loading: TOML text plus `HA_INGESTOR_…` overrides through
//! `Config::from_toml_with_env`, the function `Config::load` calls with the
//! process environment. It must never panic, and a secret must never appear in
//! an error message.
//!
//! Input (text): the first line is the tail of the secret (the secret is `Tk9`
//! followed by it); then the TOML text, in which `@S@` stands for the secret
//! written as a TOML basic string (quotes and escapes included) and `@L@` as a
//! literal string; then, after a line `---env---`, one `NAME=value` override a
//! line, where `@S@` stands for the secret as it is.
//!
//! The secret is checked when every place it is written is the value of a secret
//! key (`token`, `password`, `*_token`, … as docs/configuration.md lists them) and
//! the input does not contain it otherwise. `token_file` and `password_file` are
//! left out (they read files).
#![no_main]

use std::error::Error as _;
use std::path::Path;

use ha_ingestor::config::Config;
use libfuzzer_sys::fuzz_target;

const SECRET_KEYS: [&str; 6] = ["token", "password", "passwd", "secret", "api_key", "apikey"];
const SECRET_SUFFIXES: [&str; 4] = ["_token", "_password", "_secret", "_api_key"];

fn is_secret_key(key: &str) -> bool {
    let key = key
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str()) || SECRET_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// `value` as a TOML basic string, quotes included.
fn basic(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether each `@S@`/`@L@` on each line is the value of a secret key (`key = @S@`, also in an inline table).
fn placed_as_secret(toml: &str) -> bool {
    toml.lines().all(|line| {
        let mut rest = line;
        while let Some(at) = rest.find("@S@").into_iter().chain(rest.find("@L@")).min() {
            let before = rest[..at].trim_end();
            let Some(before) = before.strip_suffix('=') else {
                return false;
            };
            let key = before
                .rsplit(|c: char| c == '{' || c == ',' || c == '.' || c == '[')
                .next()
                .unwrap_or("");
            if !is_secret_key(key) {
                return false;
            }
            rest = &rest[at + 3..];
        }
        true
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lower = text.to_ascii_lowercase();
    if lower.contains("token_file") || lower.contains("password_file") {
        return;
    }
    let (tail, rest) = text.split_once('\n').unwrap_or((text, ""));
    let secret = format!("Tk9{tail}");
    let (toml_part, env_part) = rest.split_once("\n---env---\n").unwrap_or((rest, ""));
    let literal = if secret.chars().any(|c| c == '\'' || c.is_control()) {
        basic(&secret)
    } else {
        format!("'{secret}'")
    };
    let toml = toml_part
        .replace("@S@", &basic(&secret))
        .replace("@L@", &literal);
    let mut env = Vec::new();
    let mut env_ok = true;
    for line in env_part.lines() {
        let Some((var, value)) = line.split_once('=') else {
            continue;
        };
        if value.contains("@S@") {
            let last = var.rsplit("__").next().unwrap_or("");
            env_ok &= var.contains("__") && is_secret_key(last);
        }
        env.push((var.to_string(), value.replace("@S@", &secret)));
    }
    let escaped = basic(&secret);
    let escaped = &escaped[1..escaped.len() - 1];
    let bare = text.replace("@S@", "").replace("@L@", "");
    // Bare text shorter than 4 characters is not scrubbed by design (it would cut words).
    let written_elsewhere =
        bare.contains(secret.as_str()) || bare.contains(escaped) || secret.chars().count() < 4;
    let check = !written_elsewhere && env_ok && placed_as_secret(toml_part);

    let Err(error) = Config::from_toml_with_env(&toml, Path::new("/nonexistent/config.toml"), &env)
    else {
        return;
    };
    if !check {
        return;
    }
    let mut shown = vec![error.to_string(), format!("{error:?}")];
    let mut source = error.source();
    while let Some(e) = source {
        shown.push(e.to_string());
        source = e.source();
    }
    for message in &shown {
        assert!(
            !message.contains(secret.as_str()) && !message.contains(escaped),
            "the secret {secret:?} appears in an error: {message}"
        );
    }
});

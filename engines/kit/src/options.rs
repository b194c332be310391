//! Engine options arrive as a JSON object (see `LoadOptions::options_json`).

use engine_api::EngineError;
use serde::de::DeserializeOwned;

/// Parses an engine's options struct from the JSON the host sends. Use
/// `#[serde(deny_unknown_fields)]` on `T` so a misspelt option is an error
/// that names it.
pub fn parse_options<T: DeserializeOwned>(engine: &str, json: &str) -> Result<T, EngineError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json)
        .map_err(|e| EngineError::invalid_argument(format!("{engine} options: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        threads: Option<usize>,
    }

    #[test]
    fn parses_and_names_unknown_fields() {
        let o: Opts = parse_options("x", r#"{"threads": 3}"#).unwrap();
        assert_eq!(o.threads, Some(3));
        let o: Opts = parse_options("x", "").unwrap();
        assert_eq!(o.threads, None);
        let e = parse_options::<Opts>("candle", r#"{"thread": 3}"#).unwrap_err();
        assert!(e.message.contains("candle options"), "{e}");
        assert!(e.message.contains("thread"), "{e}");
    }
}

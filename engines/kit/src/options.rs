//! Engine options arrive as a JSON object (see `LoadOptions::options_json`).
//! Some of them belong to the kit, the same for every engine built on it
//! ([`KitOptions`]); the rest to the engine.

use crate::prefix_cache::PrefixCacheConfig;
use engine_api::EngineError;
use serde::de::DeserializeOwned;

/// Parses an engine's options struct from the JSON the host sends. Use
/// `#[serde(deny_unknown_fields)]` on `T` so a misspelt option is an error
/// that names it. An engine built on the kit's scheduler uses
/// [`engine_options`] instead, which leaves the kit's keys to the kit.
pub fn parse_options<T: DeserializeOwned>(engine: &str, json: &str) -> Result<T, EngineError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json)
        .map_err(|e| EngineError::invalid_argument(format!("{engine} options: {e}")))
}

/// The options the kit reads itself, whatever the engine.
const KIT_KEYS: [&str; 3] = ["prefix_cache", "prefix_block", "prefix_cache_mib"];

/// [`parse_options`] for an engine built on the kit: the kit's own keys
/// ([`KitOptions`]) are taken out before `T` sees the object.
pub fn engine_options<T: DeserializeOwned>(engine: &str, json: &str) -> Result<T, EngineError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let mut v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| EngineError::invalid_argument(format!("{engine} options: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        KIT_KEYS.iter().for_each(|k| drop(o.remove(*k)));
    }
    serde_json::from_value(v)
        .map_err(|e| EngineError::invalid_argument(format!("{engine} options: {e}")))
}

/// The kit's own engine options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KitOptions {
    /// Keep prompt prefixes' KV for later requests (see
    /// [`crate::prefix_cache`]); default off.
    pub prefix_cache: Option<bool>,
    /// Tokens per cached block; default 16.
    pub prefix_block: Option<usize>,
    /// The prefix cache's budget in MiB; default 256.
    pub prefix_cache_mib: Option<u64>,
}

impl KitOptions {
    /// The kit's keys of an options object (the others are the engine's).
    pub fn parse(json: &str) -> Result<Self, EngineError> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| EngineError::invalid_argument(format!("options: {e}")))?;
        fn key<T: DeserializeOwned>(
            v: &serde_json::Value,
            k: &str,
        ) -> Result<Option<T>, EngineError> {
            v.get(k)
                .map(|x| serde_json::from_value(x.clone()))
                .transpose()
                .map_err(|e| EngineError::invalid_argument(format!("options: {k}: {e}")))
        }
        Ok(KitOptions {
            prefix_cache: key(&v, "prefix_cache")?,
            prefix_block: key(&v, "prefix_block")?,
            prefix_cache_mib: key(&v, "prefix_cache_mib")?,
        })
    }

    /// The prefix cache these options ask for (`None`: off); a size of 0,
    /// or a size without `prefix_cache: true`, is an error naming the key.
    pub fn prefix_cache(&self) -> Result<Option<PrefixCacheConfig>, EngineError> {
        let on = self.prefix_cache.unwrap_or(false);
        let sized = [
            ("prefix_block", self.prefix_block.map(|v| v as u64)),
            ("prefix_cache_mib", self.prefix_cache_mib),
        ];
        for (key, v) in sized {
            match v {
                Some(0) => {
                    return Err(EngineError::invalid_argument(format!(
                        "options: {key} must be at least 1"
                    )))
                }
                Some(_) if !on => {
                    return Err(EngineError::invalid_argument(format!(
                        "options: {key} needs prefix_cache: true"
                    )))
                }
                _ => {}
            }
        }
        if !on {
            return Ok(None);
        }
        let d = PrefixCacheConfig::default();
        Ok(Some(PrefixCacheConfig {
            block_tokens: self.prefix_block.unwrap_or(d.block_tokens),
            max_bytes: self.prefix_cache_mib.map_or(d.max_bytes, |m| m << 20),
        }))
    }
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
        // the strict parser knows nothing of the kit's keys
        let e = parse_options::<Opts>("http", r#"{"prefix_cache": true}"#).unwrap_err();
        assert!(e.message.contains("prefix_cache"), "{e}");
    }

    #[test]
    fn the_kits_keys_go_to_the_kit_and_the_rest_to_the_engine() {
        let json =
            r#"{"threads": 2, "prefix_cache": true, "prefix_block": 8, "prefix_cache_mib": 3}"#;
        let o: Opts = engine_options("candle", json).unwrap();
        assert_eq!(o.threads, Some(2));
        let e = engine_options::<Opts>("candle", r#"{"prefix_cach": true}"#).unwrap_err();
        assert!(e.message.contains("candle options") && e.message.contains("prefix_cach"));
        let k = KitOptions::parse(json).unwrap();
        assert_eq!(
            k.prefix_cache().unwrap(),
            Some(PrefixCacheConfig {
                block_tokens: 8,
                max_bytes: 3 << 20
            })
        );
        assert_eq!(
            KitOptions::parse(r#"{"prefix_cache": true}"#)
                .unwrap()
                .prefix_cache()
                .unwrap(),
            Some(PrefixCacheConfig::default())
        );
        assert_eq!(KitOptions::parse("").unwrap().prefix_cache().unwrap(), None);
        let bad = |j: &str| {
            KitOptions::parse(j)
                .and_then(|k| k.prefix_cache())
                .unwrap_err()
                .message
        };
        assert!(bad(r#"{"prefix_block": 8}"#).contains("prefix_block needs prefix_cache: true"));
        assert!(bad(r#"{"prefix_cache": true, "prefix_cache_mib": 0}"#)
            .contains("prefix_cache_mib must be at least 1"));
        assert!(bad(r#"{"prefix_cache": "yes"}"#).contains("prefix_cache"));
    }
}

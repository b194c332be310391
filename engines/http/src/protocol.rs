//! The OpenAI-compatible wire format: request bodies and the meaning of one
//! streamed chunk. Pure functions, no I/O.

use engine_api::Request;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Which endpoint requests go to (option `endpoint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /v1/completions`.
    #[default]
    Completions,
    /// `POST /v1/chat/completions`.
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// How the prompt is sent (option `prompt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// `"prompt": [ids...]` (completions only; vLLM, SGLang, llama-server,
    /// engine-matrix serve accept it).
    TokenIds,
    /// Text: the ids decoded by the model's tokenizer when the model
    /// folder has one, else rendered by [`render_text`].
    Text,
}

/// What the request body carries besides the prompt.
#[derive(Clone)]
pub struct BodyOptions {
    pub model: String,
    pub endpoint: Endpoint,
    pub prompt: PromptKind,
    pub ignore_eos: bool,
    pub send_min_tokens: bool,
    pub include_usage: bool,
    pub extra_body: Map<String, Value>,
    /// The model's tokenizer (its folder's `tokenizer.json`): text prompts
    /// are the ids decoded into real text.
    pub text: Option<std::sync::Arc<engine_matrix_text::TextModel>>,
}

impl BodyOptions {
    /// The text a prompt is sent as: decoded by the model's tokenizer, or
    /// [`render_text`] for a model without one.
    pub fn prompt_text(&self, prompt: &[u32]) -> String {
        match &self.text {
            Some(t) => t
                .decode(prompt, false)
                .unwrap_or_else(|_| render_text(prompt)),
            None => render_text(prompt),
        }
    }
}

/// The text a token-id prompt is sent as when the server takes text only:
/// the ids in decimal, separated by single spaces (`[464, 3290]` ->
/// `"464 3290"`). The server tokenizes that its own way, so its prompt
/// length differs from the host's; `Completion::prompt_tokens` carries the
/// server's count when it reports usage.
pub fn render_text(prompt: &[u32]) -> String {
    let mut s = String::with_capacity(prompt.len() * 6);
    for (i, id) in prompt.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&id.to_string());
    }
    s
}

/// The JSON body for `req`.
pub fn request_body(o: &BodyOptions, req: &Request) -> Value {
    let mut b = Map::new();
    b.insert("model".into(), json!(o.model));
    match (o.endpoint, o.prompt) {
        (Endpoint::Completions, PromptKind::TokenIds) => {
            b.insert("prompt".into(), json!(req.prompt.as_slice()));
        }
        (Endpoint::Completions, PromptKind::Text) => {
            b.insert("prompt".into(), json!(o.prompt_text(&req.prompt)));
        }
        (Endpoint::Chat, _) => {
            b.insert(
                "messages".into(),
                json!([{"role": "user", "content": o.prompt_text(&req.prompt)}]),
            );
        }
    }
    b.insert("max_tokens".into(), json!(req.max_new_tokens));
    b.insert("stream".into(), json!(true));
    let s = &req.sampling;
    // f32 -> JSON via a short decimal (0.8, not 0.800000011920929).
    let num = |x: f32| json!(format!("{x}").parse::<f64>().unwrap_or(0.0));
    b.insert("temperature".into(), num(s.temperature.max(0.0)));
    b.insert("top_p".into(), num(s.top_p));
    if s.top_k > 0 {
        b.insert("top_k".into(), json!(s.top_k));
    }
    b.insert("seed".into(), json!(s.seed));
    if o.ignore_eos && req.ignore_eos {
        b.insert("ignore_eos".into(), json!(true));
    }
    if o.send_min_tokens && req.ignore_eos {
        b.insert("min_tokens".into(), json!(req.max_new_tokens));
    }
    if o.include_usage {
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (k, v) in &o.extra_body {
        b.insert(k.clone(), v.clone());
    }
    Value::Object(b)
}

/// The server's token counts (`usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// Prompt tokens the server took from its prefix cache: OpenAI's
    /// `usage.prompt_tokens_details.cached_tokens` (vLLM, llama-server),
    /// else llama-server's `timings.cache_n`.
    pub cached_tokens: Option<u32>,
}

/// What one `data:` chunk says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    /// Whether the chunk carries generated output (non-empty text, or
    /// token ids).
    pub has_content: bool,
    /// Token ids, when the server sends them: a choice's `token_ids`
    /// (engine-matrix serve, vLLM with `return_token_ids`), or an integer
    /// array `tokens` in the choice or at the top level (llama-server).
    pub ids: Vec<u32>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// `{"error": ...}` sent inside the stream.
    pub error: Option<String>,
}

fn int_array(v: &Value) -> Option<Vec<u32>> {
    let a = v.as_array()?;
    a.iter()
        .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

fn nonempty_str(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty())
}

/// The message of an OpenAI-style error value (`{"message": ..}`, a
/// string, or anything else as JSON).
pub fn error_message(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => ["message", "error", "detail", "msg"]
            .iter()
            .find_map(|k| m.get(*k))
            .map(error_message)
            .unwrap_or_else(|| v.to_string()),
        _ => v.to_string(),
    }
}

/// Interprets one chunk's `data`; `Err` holds serde's reason.
pub fn parse_chunk(data: &str) -> Result<Chunk, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let Value::Object(top) = &v else {
        return Err("the chunk is not a JSON object".into());
    };
    let mut c = Chunk::default();
    if let Some(e) = top.get("error").filter(|e| !e.is_null()) {
        c.error = Some(error_message(e));
        return Ok(c);
    }
    if let Some(u) = top.get("usage").and_then(Value::as_object) {
        let get = |k: &str| {
            u.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        c.usage = Some(Usage {
            prompt_tokens: get("prompt_tokens"),
            completion_tokens: get("completion_tokens"),
            cached_tokens: u
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
        });
    }
    let cache_n = top
        .get("timings")
        .and_then(|t| t.get("cache_n"))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    if let Some(n) = cache_n {
        let u = c.usage.get_or_insert_with(Usage::default);
        u.cached_tokens = u.cached_tokens.or(Some(n));
    }
    let choice = top
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let mut text = false;
    if let Some(ch) = choice {
        text = nonempty_str(&ch["text"])
            || nonempty_str(&ch["delta"]["content"])
            || nonempty_str(&ch["delta"]["reasoning_content"])
            || nonempty_str(&ch["delta"]["reasoning"]);
        c.ids = int_array(&ch["token_ids"])
            .or_else(|| int_array(&ch["delta"]["token_ids"]))
            .or_else(|| int_array(&ch["tokens"]))
            .unwrap_or_default();
        c.finish_reason = ch["finish_reason"].as_str().map(str::to_string);
    }
    if c.ids.is_empty() {
        c.ids = int_array(&top.get("tokens").cloned().unwrap_or(Value::Null)).unwrap_or_default();
    }
    c.has_content = text || !c.ids.is_empty();
    Ok(c)
}

/// At most `n` characters of `s`, with `…` when cut.
pub fn excerpt(s: &str, n: usize) -> String {
    let mut it = s.chars();
    let head: String = it.by_ref().take(n).collect();
    if it.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::Sampling;

    fn req() -> Request {
        Request {
            id: 1,
            prompt: vec![464u32, 3290].into(),
            max_new_tokens: 8,
            sampling: Sampling::GREEDY,
            ignore_eos: true,
        }
    }

    fn opts(endpoint: Endpoint, prompt: PromptKind) -> BodyOptions {
        BodyOptions {
            text: None,
            model: "m".into(),
            endpoint,
            prompt,
            ignore_eos: true,
            send_min_tokens: true,
            include_usage: true,
            extra_body: Map::new(),
        }
    }

    #[test]
    fn bodies() {
        let b = request_body(&opts(Endpoint::Completions, PromptKind::TokenIds), &req());
        assert_eq!(b["prompt"], json!([464, 3290]));
        assert_eq!(b["max_tokens"], 8);
        assert_eq!(b["stream"], true);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["min_tokens"], 8);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(b.get("top_k").is_none());
        let mut r = req();
        r.sampling.temperature = 0.8;
        r.sampling.top_p = 0.95;
        r.sampling.top_k = 40;
        let b = request_body(&opts(Endpoint::Completions, PromptKind::TokenIds), &r);
        assert_eq!(b.to_string().matches("0.8,").count(), 1, "{b}");
        assert_eq!(b["top_p"], 0.95);
        assert_eq!(b["top_k"], 40);
        let mut o = opts(Endpoint::Chat, PromptKind::Text);
        o.ignore_eos = false;
        o.send_min_tokens = false;
        o.include_usage = false;
        o.extra_body.insert("top_k".into(), json!(5));
        let b = request_body(&o, &req());
        assert_eq!(b["messages"][0]["content"], "464 3290");
        assert!(b.get("ignore_eos").is_none() && b.get("min_tokens").is_none());
        assert!(b.get("stream_options").is_none());
        assert_eq!(b["top_k"], 5);
        let b = request_body(&opts(Endpoint::Completions, PromptKind::Text), &req());
        assert_eq!(b["prompt"], "464 3290");
    }

    #[test]
    fn text_prompts_are_decoded_by_the_models_tokenizer() {
        use engine_matrix_text::bpe::{ByteLevelBpe, Pre};
        let tokens: Vec<String> = ["h", "i", "\u{120}", "\u{120}h", "hi", "\u{120}hi"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let tk = ByteLevelBpe {
            tokens,
            merges: vec![("h".into(), "i".into()), ("\u{120}".into(), "hi".into())],
            pre: Pre::Gpt2,
            special: vec![],
            added: vec![],
            bos: None,
        }
        .build("test")
        .unwrap();
        let mut o = opts(Endpoint::Chat, PromptKind::Text);
        o.text = Some(std::sync::Arc::new(engine_matrix_text::TextModel::new(
            tk,
            None,
            "tokenizer.json".into(),
        )));
        let mut r = req();
        r.prompt = vec![4u32, 5, 5].into();
        let b = request_body(&o, &r);
        assert_eq!(b["messages"][0]["content"], "hi hi hi");
    }

    #[test]
    fn chunks() {
        let c =
            parse_chunk(r#"{"choices":[{"index":0,"text":"hi","finish_reason":null}]}"#).unwrap();
        assert!(c.has_content && c.ids.is_empty() && c.finish_reason.is_none());
        let c = parse_chunk(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#).unwrap();
        assert!(!c.has_content);
        let c = parse_chunk(r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#)
            .unwrap();
        assert!(c.has_content);
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        let c = parse_chunk(r#"{"choices":[{"text":"","token_ids":[1,2]}]}"#).unwrap();
        assert_eq!(c.ids, vec![1, 2]);
        assert!(c.has_content);
        let c = parse_chunk(r#"{"choices":[{"text":"ab"}],"tokens":[7]}"#).unwrap();
        assert_eq!(c.ids, vec![7]);
        let c = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9,"total_tokens":12}}"#,
        )
        .unwrap();
        assert!(!c.has_content);
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(9),
                cached_tokens: None
            })
        );
        let c = parse_chunk(r#"{"error":{"message":"boom","code":500}}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("boom"));
        assert!(parse_chunk("{not json").is_err());
        assert!(parse_chunk("[1]").is_err());
    }

    #[test]
    fn cached_prompt_tokens_come_from_usage_details_or_llama_server_timings() {
        // llama-server's last chunk (b11434): both; OpenAI's field wins.
        let c = parse_chunk(
            r#"{"choices":[{"text":"","index":0,"finish_reason":"length"}],"usage":{"completion_tokens":2,"prompt_tokens":20,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":19}},"timings":{"cache_n":18,"prompt_n":1}}"#,
        )
        .unwrap();
        assert_eq!(c.usage.unwrap().cached_tokens, Some(19));
        // timings alone (a llama-server without usage)
        let c = parse_chunk(r#"{"choices":[],"timings":{"cache_n":7}}"#).unwrap();
        assert_eq!(c.usage.unwrap().cached_tokens, Some(7));
        // vLLM without --enable-prompt-tokens-details: unknown, not 0
        let c = parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":null}}"#).unwrap();
        assert_eq!(c.usage.unwrap().cached_tokens, None);
    }

    #[test]
    fn excerpts() {
        assert_eq!(excerpt("abc", 5), "abc");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}

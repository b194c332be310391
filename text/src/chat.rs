//! Chat templates: the Jinja template of `tokenizer_config.json`
//! (`chat_template`), rendered the way transformers'
//! `apply_chat_template` does (`trim_blocks`, `lstrip_blocks`, the
//! variables `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`, and a `raise_exception` function), with minijinja plus
//! minijinja-contrib's Python-compatible string methods, as TGI does.

use crate::TextError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One chat message (`role`: system, user, assistant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: &str) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template and the special tokens it may print.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// A special token in `tokenizer_config.json`: a string or an
/// `AddedToken` object with `content`.
fn token_text(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        None => String::new(),
    }
}

impl ChatTemplate {
    /// Compiles `source`; errors carry minijinja's line.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TextError> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TextError::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TextError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos: bos.into(),
            eos: eos.into(),
        })
    }

    /// The template of a `tokenizer_config.json` (`chat_template` as a
    /// string, or the `default` of a list of named templates), or `None`
    /// when it has none.
    pub fn from_config_file(file: &Path) -> Result<Option<Self>, TextError> {
        let text = std::fs::read_to_string(file).map_err(|e| TextError::file(file, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TextError::file(file, e))?;
        let source = match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .ok_or_else(|| TextError::file(file, "chat_template list has no \"default\""))?
                .to_string(),
            Some(other) => {
                return Err(TextError::file(
                    file,
                    format!("chat_template must be a string or a list, got {other}"),
                ))
            }
        };
        let bos = token_text(v.get("bos_token"));
        let eos = token_text(v.get("eos_token"));
        Self::new(&source, &bos, &eos)
            .map(Some)
            .map_err(|e| TextError::file(file, e))
    }

    /// The conversation as the model was trained to see it; with
    /// `add_generation_prompt` it ends by opening the assistant's turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| TextError::Template(e.to_string()))?;
        t.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| TextError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ChatML, the template SmolLM2 and Qwen2 ship (with the default
    /// system prompt branch, as in SmolLM2's).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_as_transformers_does() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&[Message::user("Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t.render(&[Message::user("Hi")], false).unwrap();
        assert!(out.ends_with("<|im_end|>\n"), "{out}");
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ bos_token }}{{ messages[0].content.strip() | upper }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[Message::user("  hi ")], true).unwrap(), "<s>HI");
        let sys = Message {
            role: "system".into(),
            content: "x".into(),
        };
        let e = t.render(&[sys], true).unwrap_err();
        assert!(e.to_string().contains("first must be user"), "{e}");
    }

    #[test]
    fn config_files_give_the_template_or_none_or_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("em-text-chat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokenizer_config.json");
        std::fs::write(&f, r#"{"bos_token": {"content": "<s>"}, "chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]}"#).unwrap();
        let t = ChatTemplate::from_config_file(&f).unwrap().unwrap();
        assert_eq!(t.render(&[Message::user("q")], true).unwrap(), "<s>q");
        std::fs::write(&f, r#"{"eos_token": "</s>"}"#).unwrap();
        assert!(ChatTemplate::from_config_file(&f).unwrap().is_none());
        std::fs::write(&f, r#"{"chat_template": "{% if %}"}"#).unwrap();
        let e = ChatTemplate::from_config_file(&f).unwrap_err();
        assert!(e.to_string().contains("tokenizer_config.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

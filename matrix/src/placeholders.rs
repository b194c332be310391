//! `${NAME}` placeholders: their syntax, part of the matrix format (a
//! launch command, its readiness URL, its environment and the engine's
//! string options may hold them). The matrix checks them when it is
//! parsed; the host's `launch` module fills them in when it starts a server.

/// The `${NAME}` placeholders of `s`, in order; an error for a malformed
/// one.
pub fn placeholders(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    split(s, |part| {
        if let Part::Var(v) = part {
            out.push(v.to_string());
        }
        Ok(())
    })?;
    Ok(out)
}

/// `s` with every `${NAME}` replaced by the environment variable `NAME`
/// (model paths: `path: ${SMOLLM2_GGUF}`, set by `scripts/engine-matrix`);
/// an error names the first variable that is not set.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::new();
    split(s, |part| {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Var(v) => match std::env::var(v) {
                Ok(val) if !val.is_empty() => out.push_str(&val),
                _ => {
                    return Err(format!(
                        "`${{{v}}}` in `{s}`: the environment variable {v} is not set"
                    ))
                }
            },
        }
        Ok(())
    })?;
    Ok(out)
}

pub enum Part<'a> {
    Text(&'a str),
    Var(&'a str),
}

pub fn split<'a>(
    s: &'a str,
    mut f: impl FnMut(Part<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest[..i].ends_with('$') {
            // `$${`: a literal `${`.
            f(Part::Text(&rest[..i - 1]))?;
            f(Part::Text("${"))?;
            rest = &rest[i + 2..];
            continue;
        }
        f(Part::Text(&rest[..i]))?;
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in `{s}`"));
        };
        let name = &after[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{name}}}` in `{s}` is not a placeholder (use ${{NAME}} with letters, digits and `_`)"
            ));
        }
        f(Part::Var(name))?;
        rest = &after[end + 1..];
    }
    f(Part::Text(rest))
}

/// `base_url` without a trailing `/` or `/v1` (as the http plugin reads
/// it).
pub fn server_root(base_url: &str) -> &str {
    let b = base_url.trim_end_matches('/');
    b.strip_suffix("/v1").unwrap_or(b)
}

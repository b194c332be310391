//! Tables and numbers as text, shared by the Markdown and HTML reports:
//! the sections that build a [`Table`] ([`super::serving`],
//! [`super::lifecycle`]) depend on this module only, and each report
//! renders it in its own syntax.

/// A table's header row and body rows, as text.
pub(crate) struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// `v` with `digits` decimals, or `—` when there is none or it is not
/// finite.
pub(crate) fn f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "—".into(),
    }
}

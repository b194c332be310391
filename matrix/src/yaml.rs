//! A YAML document as a tree of nodes that remember where they were written,
//! built from `saphyr-parser` events, plus typed accessors whose errors name
//! the file, line, column and field path.
//!
//! Scalars are resolved with the YAML 1.2 core schema (what `serde_yaml`
//! does too): a plain `~`/`null`/empty scalar is null, `true`/`false` are
//! booleans, `12`, `-3`, `0x1f`, `0o17` are integers, `1.5`, `1e3`, `.inf`
//! are floats, everything else (and every quoted or block scalar, or one
//! tagged `!!str`) is a string. Anchors and aliases are supported; other
//! tags than the core schema's are refused.

use super::MatrixError;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// Deepest nesting accepted, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 128;
/// Most nodes (keys, values and list items) a document may hold once its
/// aliases are expanded: an alias copies its anchor's whole tree, so a few
/// lines of nested aliases ("billion laughs") could otherwise ask for
/// billions. A real matrix has hundreds.
pub(crate) const MAX_NODES: usize = 100_000;
/// Most bytes of scalar text a document may hold once its aliases are
/// expanded.
pub(crate) const MAX_TEXT_BYTES: usize = 16 << 20;
/// Most bytes all field paths (`scenarios[0].axes.batch_size[2]`) may add
/// up to in the span index: very long keys above many nodes would
/// otherwise make it quadratic in the file's size.
pub(crate) const MAX_PATH_BYTES: usize = 64 << 20;

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// `quoted` is true for every non-plain style and for `!!str`.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A resolved scalar.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

/// A syntax error, or a document over the size limits: 1-based line and
/// column, and what is wrong.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The YAML is valid but larger than [`MAX_NODES`] or
    /// [`MAX_TEXT_BYTES`] allow.
    pub too_large: bool,
}

/// What a tree costs against the limits.
#[derive(Clone, Copy, Debug)]
struct Cost {
    nodes: usize,
    bytes: usize,
}

fn pos(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

/// Parses `text` (one YAML document). `Ok(None)` for a stream without a
/// document (empty or only comments).
pub(crate) fn load(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut l = Loader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        left: Cost {
            nodes: MAX_NODES,
            bytes: MAX_TEXT_BYTES,
        },
        built: Cost { nodes: 0, bytes: 0 },
    };
    let mut doc = None;
    loop {
        let (ev, span) = l.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => return Ok(doc),
            Event::DocumentStart(_) => {
                if doc.is_some() {
                    let (line, col) = pos(&span);
                    return Err(SyntaxError {
                        line,
                        col,
                        message: "a matrix file holds a single YAML document".into(),
                        too_large: false,
                    });
                }
                let (ev, span) = l.next()?;
                doc = Some(l.node(ev, span, 0)?);
            }
            other => {
                let (line, col) = pos(&span);
                return Err(SyntaxError {
                    line,
                    col,
                    message: format!("unexpected YAML event {other:?}"),
                    too_large: false,
                });
            }
        }
    }
}

struct Loader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Anchor id -> its node and what that node cost.
    anchors: HashMap<usize, (Node, Cost)>,
    /// What the rest of the document may still cost.
    left: Cost,
    /// The size of the trees built so far (without the anchors' copies).
    built: Cost,
}

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        match self.parser.next_event() {
            Some(Ok(x)) => Ok(x),
            Some(Err(e)) => Err(SyntaxError {
                line: e.marker().line(),
                col: e.marker().col() + 1,
                message: e.info().to_string(),
                too_large: false,
            }),
            None => Err(SyntaxError {
                line: 1,
                col: 1,
                message: "unexpected end of the YAML stream".into(),
                too_large: false,
            }),
        }
    }

    /// Charges `cost` against the limits, or says which one it exceeds.
    fn charge(&mut self, cost: Cost, line: usize, col: usize) -> Result<(), SyntaxError> {
        let fail = |message: String| SyntaxError {
            line,
            col,
            message,
            too_large: true,
        };
        if cost.nodes > self.left.nodes {
            return Err(fail(format!(
                "the document holds more than {MAX_NODES} YAML nodes once its aliases \
                 are expanded"
            )));
        }
        if cost.bytes > self.left.bytes {
            return Err(fail(format!(
                "the document holds more than {} MiB of text once its aliases are expanded",
                MAX_TEXT_BYTES >> 20
            )));
        }
        self.left.nodes -= cost.nodes;
        self.left.bytes -= cost.bytes;
        Ok(())
    }

    /// Charges `cost` for nodes of the tree.
    fn grow(&mut self, cost: Cost, line: usize, col: usize) -> Result<(), SyntaxError> {
        self.charge(cost, line, col)?;
        self.built.nodes += cost.nodes;
        self.built.bytes += cost.bytes;
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, SyntaxError> {
        let (line, col) = pos(&span);
        let fail = |message: String| SyntaxError {
            line,
            col,
            message,
            too_large: false,
        };
        if depth > MAX_DEPTH {
            return Err(fail(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let check_tag = |tag: &Option<std::borrow::Cow<'_, saphyr_parser::Tag>>| match tag {
            Some(t) if !t.is_yaml_core_schema() => Err(fail(format!("unsupported YAML tag `{t}`"))),
            _ => Ok(()),
        };
        let before = self.built;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                check_tag(&tag)?;
                self.grow(
                    Cost {
                        nodes: 1,
                        bytes: text.len(),
                    },
                    line,
                    col,
                )?;
                let is_str = tag.as_deref().is_some_and(|t| t.suffix == "str");
                let quoted = is_str || style != ScalarStyle::Plain;
                let kind = Kind::Scalar {
                    text: text.into_owned(),
                    quoted,
                };
                (Node { kind, line, col }, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                check_tag(&tag)?;
                self.grow(Cost { nodes: 1, bytes: 0 }, line, col)?;
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (
                    Node {
                        kind: Kind::Seq(items),
                        line,
                        col,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, tag) => {
                check_tag(&tag)?;
                self.grow(Cost { nodes: 1, bytes: 0 }, line, col)?;
                let mut entries: Vec<(Node, Node)> = Vec::new();
                // Key -> where it was first written.
                let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node(ev, span, depth + 1)?;
                    let Kind::Scalar { text, .. } = &key.kind else {
                        return Err(SyntaxError {
                            line: key.line,
                            col: key.col,
                            message: "mapping keys must be plain strings".into(),
                            too_large: false,
                        });
                    };
                    if let Some((first_line, first_col)) = seen.get(text.as_str()) {
                        return Err(SyntaxError {
                            line: key.line,
                            col: key.col,
                            message: format!(
                                "duplicate key `{text}` (first at line {first_line} column \
                                 {first_col})"
                            ),
                            too_large: false,
                        });
                    }
                    seen.insert(text.clone(), (key.line, key.col));
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span, depth + 1)?;
                    entries.push((key, value));
                }
                (
                    Node {
                        kind: Kind::Map(entries),
                        line,
                        col,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                // Charged before the copy is made: an alias bomb is refused
                // at its first alias over the limits.
                let cost = match self.anchors.get(&id) {
                    Some((_, cost)) => *cost,
                    None => return Err(fail("alias to an unknown anchor".into())),
                };
                self.grow(cost, line, col)?;
                let mut n = self.anchors[&id].0.clone();
                n.line = line;
                n.col = col;
                return Ok(n);
            }
            other => return Err(fail(format!("unexpected YAML event {other:?}"))),
        };
        if anchor != 0 {
            let cost = Cost {
                nodes: self.built.nodes - before.nodes,
                bytes: self.built.bytes - before.bytes,
            };
            // The copy kept for aliases is charged too, so that nested
            // anchors cannot hold many copies of the same tree for free.
            self.charge(cost, line, col)?;
            self.anchors.insert(anchor, (node.clone(), cost));
        }
        Ok(node)
    }
}

impl Node {
    fn key_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The resolved value of a scalar node; `None` for collections.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.kind {
            Kind::Scalar { text, quoted: true } => Some(Scalar::Str(text)),
            Kind::Scalar {
                text,
                quoted: false,
            } => Some(resolve_plain(text)),
            _ => None,
        }
    }

    /// How the node reads in an error message ("got ...").
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
            Kind::Scalar { text, quoted } => match self.scalar() {
                Some(Scalar::Null) => "nothing (null)".into(),
                Some(Scalar::Str(_)) if *quoted || !text.is_empty() => format!("{text:?}"),
                _ => text.clone(),
            },
        }
    }
}

/// Core-schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Scalar<'_> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Scalar::Float(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if s == body {
        // `from_str_radix` would also take a sign (`0x-1`): the core
        // schema's `0x[0-9a-fA-F]+` and `0o[0-7]+` do not.
        if let Some(h) = s.strip_prefix("0x") {
            if h.bytes().all(|b| b.is_ascii_hexdigit()) {
                if let Ok(v) = i64::from_str_radix(h, 16) {
                    return Scalar::Int(v);
                }
            }
        }
        if let Some(o) = s.strip_prefix("0o") {
            if o.bytes().all(|b| matches!(b, b'0'..=b'7')) {
                if let Ok(v) = i64::from_str_radix(o, 8) {
                    return Scalar::Int(v);
                }
            }
        }
    }
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i64>() {
            Ok(v) => Scalar::Int(v),
            Err(_) => Scalar::Float(s.parse().unwrap_or(f64::NAN)),
        };
    }
    if is_float(body) {
        if let Ok(v) = s.parse::<f64>() {
            return Scalar::Float(v);
        }
    }
    Scalar::Str(s)
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (sign already removed).
fn is_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int = digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac = digits(&mut i);
        if int == 0 && frac == 0 {
            return false;
        }
    } else if int == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Records the position of every node under `node` by field path
/// (`scenarios[0].axes.batch_size[2]`). `Err(())` when the paths would add
/// up to more than `budget` bytes (see [`MAX_PATH_BYTES`]).
pub(crate) fn index(
    node: &Node,
    path: &str,
    out: &mut HashMap<String, (usize, usize)>,
    budget: &mut usize,
) -> Result<(), ()> {
    if !path.is_empty() {
        *budget = budget.checked_sub(path.len()).ok_or(())?;
        out.insert(path.to_string(), (node.line, node.col));
    }
    match &node.kind {
        Kind::Scalar { .. } => {}
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                index(item, &format!("{path}[{i}]"), out, budget)?;
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                if let Some(key) = k.key_text() {
                    if path.len() + key.len() > *budget {
                        return Err(());
                    }
                    index(v, &join(path, key), out, budget)?;
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A node together with its field path, for typed access whose errors say
/// where the node is.
#[derive(Clone)]
pub(crate) struct At<'n> {
    pub file: &'n str,
    pub node: &'n Node,
    pub path: String,
}

impl<'n> At<'n> {
    pub fn root(file: &'n str, node: &'n Node) -> Self {
        At {
            file,
            node,
            path: String::new(),
        }
    }

    pub fn err(&self, message: impl Into<String>) -> MatrixError {
        MatrixError::At {
            file: self.file.to_string(),
            line: self.node.line,
            column: self.node.col,
            field: self.path.clone(),
            message: message.into(),
        }
    }

    fn expected(&self, what: &str) -> MatrixError {
        self.err(format!("expected {what}, got {}", self.node.describe()))
    }

    pub fn is_null(&self) -> bool {
        matches!(self.node.scalar(), Some(Scalar::Null))
    }

    /// The entries of a mapping, refusing keys outside `allowed`.
    pub fn map(&self, allowed: &[&str]) -> Result<MapView<'n>, MatrixError> {
        let Kind::Map(entries) = &self.node.kind else {
            return Err(self.expected("a mapping"));
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = k.key_text().unwrap_or_default();
            let path = join(&self.path, key);
            if !allowed.contains(&key) {
                return Err(MatrixError::At {
                    file: self.file.to_string(),
                    line: k.line,
                    column: k.col,
                    field: path,
                    message: format!("unknown key `{key}` (allowed: {})", allowed.join(", ")),
                });
            }
            out.push((
                key,
                k,
                At {
                    file: self.file,
                    node: v,
                    path,
                },
            ));
        }
        Ok(MapView {
            at: self.clone(),
            entries: out,
        })
    }

    /// The entries of a mapping with free-form keys (such as environment
    /// variables).
    pub fn map_any(&self) -> Result<Vec<(&'n str, At<'n>)>, MatrixError> {
        let Kind::Map(entries) = &self.node.kind else {
            return Err(self.expected("a mapping"));
        };
        Ok(entries
            .iter()
            .map(|(k, v)| {
                let key = k.key_text().unwrap_or_default();
                (
                    key,
                    At {
                        file: self.file,
                        node: v,
                        path: join(&self.path, key),
                    },
                )
            })
            .collect())
    }

    /// The items of a list.
    pub fn seq(&self) -> Result<Vec<At<'n>>, MatrixError> {
        let Kind::Seq(items) = &self.node.kind else {
            return Err(self.expected("a list"));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, node)| At {
                file: self.file,
                node,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    /// The items of a non-empty list.
    pub fn non_empty_seq(&self) -> Result<Vec<At<'n>>, MatrixError> {
        let items = self.seq()?;
        if items.is_empty() {
            return Err(self.err("expected a non-empty list, got an empty one"));
        }
        Ok(items)
    }

    pub fn str(&self) -> Result<&'n str, MatrixError> {
        match self.node.scalar() {
            Some(Scalar::Str(s)) => Ok(s),
            _ => Err(self.expected("a string")),
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self.node.scalar() {
            Some(Scalar::Int(v)) => Some(v),
            _ => None,
        }
    }

    /// An integer in `[min, u32::MAX]`.
    pub fn u32_min(&self, min: u32) -> Result<u32, MatrixError> {
        let what = match min {
            0 => "a non-negative integer".to_string(),
            1 => "a positive integer".to_string(),
            _ => format!("an integer of at least {min}"),
        };
        match self.int() {
            Some(v) if v >= i64::from(min) && v <= i64::from(u32::MAX) => Ok(v as u32),
            _ => Err(self.expected(&what)),
        }
    }

    pub fn u64(&self) -> Result<u64, MatrixError> {
        match self.int() {
            Some(v) if v >= 0 => Ok(v as u64),
            _ => Err(self.expected("a non-negative integer")),
        }
    }

    /// A finite number >= 0 (integers are accepted).
    pub fn non_negative(&self) -> Result<f64, MatrixError> {
        let v = match self.node.scalar() {
            Some(Scalar::Int(v)) => v as f64,
            Some(Scalar::Float(v)) => v,
            _ => f64::NAN,
        };
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(self.expected("a non-negative number"))
        }
    }

    /// The node as JSON (mapping keys become strings; floats must be
    /// finite).
    pub fn json(&self) -> Result<serde_json::Value, MatrixError> {
        use serde_json::Value;
        Ok(match &self.node.kind {
            Kind::Seq(_) => {
                Value::Array(self.seq()?.iter().map(At::json).collect::<Result<_, _>>()?)
            }
            Kind::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.key_text().unwrap_or_default();
                    let child = At {
                        file: self.file,
                        node: v,
                        path: join(&self.path, key),
                    };
                    m.insert(key.to_string(), child.json()?);
                }
                Value::Object(m)
            }
            Kind::Scalar { .. } => match self.node.scalar().unwrap_or(Scalar::Null) {
                Scalar::Null => Value::Null,
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Int(v) => Value::from(v),
                Scalar::Float(v) => serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .ok_or_else(|| self.expected("a finite number"))?,
                Scalar::Str(s) => Value::String(s.to_string()),
            },
        })
    }
}

/// The checked entries of a mapping.
pub(crate) struct MapView<'n> {
    pub at: At<'n>,
    /// (key, key node, value)
    pub entries: Vec<(&'n str, &'n Node, At<'n>)>,
}

impl<'n> MapView<'n> {
    pub fn get(&self, key: &str) -> Option<&At<'n>> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| v)
    }

    /// Like [`get`](Self::get), treating an explicit null as absent.
    pub fn opt(&self, key: &str) -> Option<&At<'n>> {
        self.get(key).filter(|v| !v.is_null())
    }

    pub fn require(&self, key: &str) -> Result<&At<'n>, MatrixError> {
        self.opt(key)
            .ok_or_else(|| self.at.err(format!("missing required key `{key}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema_resolution() {
        assert_eq!(resolve_plain("12"), Scalar::Int(12));
        assert_eq!(resolve_plain("-3"), Scalar::Int(-3));
        assert_eq!(resolve_plain("+3"), Scalar::Int(3));
        assert_eq!(resolve_plain("0x1f"), Scalar::Int(31));
        assert_eq!(resolve_plain("0o17"), Scalar::Int(15));
        assert_eq!(resolve_plain("1.5"), Scalar::Float(1.5));
        assert_eq!(resolve_plain(".5"), Scalar::Float(0.5));
        assert_eq!(resolve_plain("1e3"), Scalar::Float(1000.0));
        assert_eq!(resolve_plain("-.inf"), Scalar::Float(f64::NEG_INFINITY));
        assert_eq!(resolve_plain("~"), Scalar::Null);
        assert_eq!(resolve_plain(""), Scalar::Null);
        assert_eq!(resolve_plain("True"), Scalar::Bool(true));
        assert_eq!(resolve_plain("f32"), Scalar::Str("f32"));
        assert_eq!(resolve_plain("1e"), Scalar::Str("1e"));
        assert_eq!(resolve_plain("."), Scalar::Str("."));
        assert_eq!(resolve_plain("inf"), Scalar::Str("inf"));
        assert_eq!(resolve_plain("nan"), Scalar::Str("nan"));
        assert_eq!(resolve_plain("1_000"), Scalar::Str("1_000"));
        assert_eq!(resolve_plain("-"), Scalar::Str("-"));
        assert_eq!(resolve_plain("0x-1"), Scalar::Str("0x-1"));
        assert_eq!(resolve_plain("0x+1f"), Scalar::Str("0x+1f"));
        assert_eq!(resolve_plain("0o-7"), Scalar::Str("0o-7"));
    }

    #[test]
    fn quoted_and_tagged_scalars_are_strings() {
        let n = load("a: \"1\"\nb: !!str 2\nc: 3\n").unwrap().unwrap();
        let Kind::Map(e) = &n.kind else { panic!() };
        assert_eq!(e[0].1.scalar(), Some(Scalar::Str("1")));
        assert_eq!(e[1].1.scalar(), Some(Scalar::Str("2")));
        assert_eq!(e[2].1.scalar(), Some(Scalar::Int(3)));
    }

    #[test]
    fn positions_are_one_based() {
        let n = load("a:\n  b: [1, 22]\n").unwrap().unwrap();
        let mut idx = HashMap::new();
        index(&n, "", &mut idx, &mut { MAX_PATH_BYTES }).unwrap();
        assert_eq!(idx["a.b[1]"], (2, 10));
        assert_eq!(idx["a.b"], (2, 6));
    }

    #[test]
    fn aliases_are_expanded() {
        let n = load("a: &x {k: 1}\nb: *x\n").unwrap().unwrap();
        let Kind::Map(e) = &n.kind else { panic!() };
        assert!(matches!(&e[1].1.kind, Kind::Map(m) if m.len() == 1));
        assert_eq!((e[1].1.line, e[1].1.col), (2, 4));
    }

    #[test]
    fn empty_and_multi_document_streams() {
        assert!(load("").unwrap().is_none());
        assert!(load("# only a comment\n").unwrap().is_none());
        let e = load("a: 1\n---\nb: 2\n").err().unwrap();
        assert_eq!((e.line, e.col), (2, 1));
    }
}

//! A YAML tree that remembers where every node came from.
//!
//! Compile must report each mistake with its file, line and column, and must keep going after the
//! first one. serde-based YAML crates deserialize straight into types and forget positions, so
//! compile first builds this tree from yaml-rust2's marked events: anchors and aliases are resolved
//! (an alias becomes a copy of its anchored node, positions included), merge keys (`<<`) are applied,
//! and plain scalars are resolved with the YAML 1.2 core schema. Everything after this works on
//! [`Node`]s and never sees raw text again.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a source file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub col: usize,
}

impl Pos {
    fn from_marker(marker: &Marker) -> Self {
        Pos { line: marker.line().max(1), col: marker.col() + 1 }
    }
}

/// A scalar after YAML 1.2 core-schema resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `~`, `null`, or an empty plain scalar.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Anything else, including every quoted or block scalar.
    Str(String),
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar value.
    Scalar(Scalar),
    /// A sequence of nodes.
    Seq(Vec<Node>),
    /// A mapping, in source order. Keys are nodes so their positions can be reported.
    Map(Vec<(Node, Node)>),
}

/// A YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts in its file.
    pub pos: Pos,
    /// What the node holds.
    pub kind: NodeKind,
}

/// Why a YAML text could not be turned into a tree.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    /// Where the problem is.
    pub pos: Pos,
    /// What the problem is.
    pub message: String,
}

impl Node {
    /// The name of the node's type as a user would say it, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(Scalar::Null) => "null",
            NodeKind::Scalar(Scalar::Bool(_)) => "a boolean",
            NodeKind::Scalar(Scalar::Int(_)) => "an integer",
            NodeKind::Scalar(Scalar::Float(_)) => "a number",
            NodeKind::Scalar(Scalar::Str(_)) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The text of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The entries of a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items of a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// A scalar written as text: strings as they are, numbers and booleans as YAML wrote them.
    /// Keys and dates are read through this, so `2019-01-01` and `2019` both work.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            NodeKind::Scalar(Scalar::Str(s)) => Some(s.clone()),
            NodeKind::Scalar(Scalar::Int(i)) => Some(i.to_string()),
            NodeKind::Scalar(Scalar::Float(f)) => Some(f.to_string()),
            NodeKind::Scalar(Scalar::Bool(b)) => Some(b.to_string()),
            NodeKind::Scalar(Scalar::Null) | NodeKind::Seq(_) | NodeKind::Map(_) => None,
        }
    }

    /// The value of `key` in a mapping, with the key node.
    pub fn get(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// Converts the tree to JSON, the form operators and templates work with.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Scalar(Scalar::Null) => Value::Null,
            NodeKind::Scalar(Scalar::Bool(b)) => Value::Bool(*b),
            NodeKind::Scalar(Scalar::Int(i)) => Value::from(*i),
            NodeKind::Scalar(Scalar::Float(f)) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeKind::Scalar(Scalar::Str(s)) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Finds the node at a serde path such as `steps[1].args` (as printed by
    /// `serde_path_to_error`), falling back to the deepest node that exists.
    pub fn locate(&self, path: &str) -> &Node {
        let mut node = self;
        for segment in split_path(path) {
            let next = match segment {
                PathSegment::Key(key) => node.get(&key).map(|(_, v)| v),
                PathSegment::Index(i) => node.as_seq().and_then(|items| items.get(i)),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

enum PathSegment {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<PathSegment> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        if part.is_empty() || part == "?" {
            continue;
        }
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            segments.push(PathSegment::Key(name.to_string()));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                segments.push(PathSegment::Index(i));
            }
        }
    }
    segments
}

/// The result of parsing one file: its documents.
#[derive(Debug)]
pub struct Documents {
    /// The root node of each document, in order.
    pub roots: Vec<Node>,
    /// Where each document begins (`starts[i]` for `roots[i]`), for the "several documents" error.
    pub starts: Vec<Pos>,
}

/// Parses YAML text into node trees, one per document.
pub fn parse(source: &str) -> Result<Documents, YamlError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, true) {
        let pos = Pos::from_marker(e.marker());
        let message = match e.info() {
            "while parsing node, found unknown anchor" => {
                // Name the alias: yaml-rust2 only says an anchor is unknown.
                let name: String = source
                    .lines()
                    .nth(pos.line.saturating_sub(1))
                    .unwrap_or_default()
                    .chars()
                    .skip(pos.col.saturating_sub(1))
                    .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}'))
                    .collect();
                format!("unknown alias {name}: no anchor &{} is defined before it", name.trim_start_matches('*'))
            }
            info => info.to_string(),
        };
        return Err(YamlError { pos, message });
    }
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(Documents { roots: builder.roots, starts: builder.starts })
}

/// A container being filled while its events arrive.
enum Open {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Node, Node)>, pending_key: Option<Node> },
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    roots: Vec<Node>,
    starts: Vec<Pos>,
    error: Option<YamlError>,
}

impl TreeBuilder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.roots.push(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map { pending_key, entries, .. }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }

    fn finish_map(&mut self, pos: Pos, entries: Vec<(Node, Node)>) -> Node {
        // yaml-rust2 marks a block mapping at the `:` after its first key; the mapping starts at
        // that key (a flow mapping's `{` comes first and is kept).
        let pos = entries.first().map_or(pos, |(key, _)| {
            if (key.pos.line, key.pos.col) < (pos.line, pos.col) { key.pos } else { pos }
        });
        let mut merged: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut inherited: Vec<(Node, Node)> = Vec::new();
        for (key, value) in entries {
            let is_merge = matches!(&key.kind, NodeKind::Scalar(Scalar::Str(s)) if s == "<<");
            if !is_merge {
                merged.push((key, value));
                continue;
            }
            // `<<: *a` or `<<: [*a, *b]`: earlier sources win over later ones, and the mapping's own
            // keys win over all of them (YAML merge key specification).
            // Aliases keep their anchor's position, so a bad source is reported at this `<<`.
            let merge_pos = key.pos;
            let sources: Vec<Node> = match value.kind {
                NodeKind::Seq(items) => items,
                _ => vec![value],
            };
            for source in sources {
                match source.kind {
                    NodeKind::Map(source_entries) => {
                        for (k, v) in source_entries {
                            if !inherited.iter().any(|(ik, _)| same_key(ik, &k)) {
                                inherited.push((k, v));
                            }
                        }
                    }
                    _ => {
                        if self.error.is_none() {
                            self.error = Some(YamlError {
                                pos: merge_pos,
                                message: format!(
                                    "a merge key (<<) needs a mapping or a list of mappings, found {}",
                                    source.type_name()
                                ),
                            });
                        }
                    }
                }
            }
        }
        for (k, v) in inherited {
            if !merged.iter().any(|(mk, _)| same_key(mk, &k)) {
                merged.push((k, v));
            }
        }
        Node { pos, kind: NodeKind::Map(merged) }
    }

    fn record_anchor(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }
}

fn same_key(a: &Node, b: &Node) -> bool {
    a.kind == b.kind
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let pos = Pos::from_marker(&marker);
        match event {
            Event::DocumentStart => self.starts.push(pos),
            Event::Scalar(value, style, anchor, tag) => {
                let scalar = if style == TScalarStyle::Plain && tag.is_none() {
                    resolve_plain(value)
                } else if let Some(tag) = tag.filter(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!") {
                    resolve_tagged(&tag.suffix, value)
                } else {
                    Scalar::Str(value)
                };
                let node = Node { pos, kind: NodeKind::Scalar(scalar) };
                self.record_anchor(anchor, &node);
                self.push_node(node);
            }
            Event::Alias(anchor) => {
                let node = match self.anchors.get(&anchor) {
                    Some(node) => node.clone(),
                    None => Node { pos, kind: NodeKind::Scalar(Scalar::Null) },
                };
                self.push_node(node);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Open::Seq { pos, anchor, items: Vec::new() });
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Open::Map { pos, anchor, entries: Vec::new(), pending_key: None });
            }
            Event::SequenceEnd => {
                if let Some(Open::Seq { pos, anchor, items }) = self.stack.pop() {
                    let node = Node { pos, kind: NodeKind::Seq(items) };
                    self.record_anchor(anchor, &node);
                    self.push_node(node);
                }
            }
            Event::MappingEnd => {
                if let Some(Open::Map { pos, anchor, entries, .. }) = self.stack.pop() {
                    let node = self.finish_map(pos, entries);
                    self.record_anchor(anchor, &node);
                    self.push_node(node);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

fn resolve_tagged(suffix: &str, value: String) -> Scalar {
    match suffix {
        "str" => Scalar::Str(value),
        "null" => Scalar::Null,
        _ => resolve_plain(value),
    }
}

/// YAML 1.2 core schema: the rules serde_yaml and most modern YAML tools follow, so `yes`, `on`
/// and `2019-01-01` stay strings.
fn resolve_plain(value: String) -> Scalar {
    match value.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    if let Some(int) = parse_int(&value) {
        return Scalar::Int(int);
    }
    let looks_numeric = value
        .trim_start_matches(['-', '+'])
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.');
    if looks_numeric
        && value.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
    {
        if let Ok(f) = value.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    Scalar::Str(value)
}

fn parse_int(value: &str) -> Option<i64> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.strip_prefix('+').unwrap_or(value)),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        digits.parse::<i64>().ok()
    } else {
        None
    }?;
    Some(if negative { -parsed } else { parsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(src: &str) -> Node {
        parse(src).unwrap().roots.remove(0)
    }

    #[test]
    fn positions_are_one_based() {
        let node = root("a: 1\nbb:\n  - x\n");
        let (key, value) = node.get("bb").unwrap();
        assert_eq!(key.pos, Pos { line: 2, col: 1 });
        let item = &value.as_seq().unwrap()[0];
        assert_eq!(item.pos, Pos { line: 3, col: 5 });
    }

    #[test]
    fn core_schema_resolution() {
        let node = root("a: yes\nb: 2019-01-01\nc: 0x10\nd: 1.5\ne: ~\nf: true\ng: '1'\n");
        let json = node.to_json();
        assert_eq!(json["a"], "yes");
        assert_eq!(json["b"], "2019-01-01");
        assert_eq!(json["c"], 16);
        assert_eq!(json["d"], 1.5);
        assert!(json["e"].is_null());
        assert_eq!(json["f"], true);
        assert_eq!(json["g"], "1");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let node = root("base: &b {retries: 2, timeout: 1m}\ntask:\n  <<: *b\n  retries: 5\nlist: [*b]\n");
        let json = node.to_json();
        assert_eq!(json["task"]["retries"], 5);
        assert_eq!(json["task"]["timeout"], "1m");
        assert_eq!(json["list"][0]["retries"], 2);
    }

    #[test]
    fn block_mappings_start_at_their_first_key() {
        let node = root("a: 1\nb:\n  c: 2\nd: {e: 3}\n");
        assert_eq!(node.pos, Pos { line: 1, col: 1 });
        assert_eq!(node.get("b").unwrap().1.pos, Pos { line: 3, col: 3 });
        assert_eq!(node.get("d").unwrap().1.pos, Pos { line: 4, col: 4 });
    }

    #[test]
    fn unknown_aliases_are_named() {
        let err = parse("a: &x 1\nb: [*y, 2]\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, col: 5 });
        assert_eq!(err.message, "unknown alias *y: no anchor &y is defined before it");
    }

    #[test]
    fn several_documents_are_counted() {
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.roots.len(), 2);
        assert_eq!(docs.starts[1].line, 2);
    }

    #[test]
    fn locate_follows_serde_paths() {
        let node = root("steps:\n  - name: a\n  - name: b\n    args: [1]\n");
        assert_eq!(node.locate("steps[1].args").pos.line, 4);
        assert_eq!(node.locate("steps[1].missing").pos.line, 3);
    }
}

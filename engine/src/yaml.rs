//! A YAML tree that remembers where every node came from.
//!
//! Compile must report each mistake with its file, line and column, and must keep going after the
//! first one. serde-based YAML crates deserialize straight into types and forget positions, so
//! compile first builds this tree from yaml-rust2's marked events: anchors and aliases are resolved
//! (an alias becomes a copy of its anchored node, positions included), merge keys (`<<`) are applied,
//! and plain scalars are resolved with the YAML 1.2 core schema. Everything after this works on
//! [`Node`]s and never sees raw text again.
//!
//! The reader is also where hostile input stops: a tree never nests deeper than [`MAX_DEPTH`],
//! never holds more nodes than [`node_budget`] allows once aliases are expanded, and no mapping in
//! it holds a key twice. Both bounds are checked before the node that would pass them is made, so
//! reading any file takes memory and time in proportion to its size.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, Parser};
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
    /// How to fix it, when the reader knows better than "check the YAML here".
    pub hint: Option<String>,
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

/// One step of a path into a tree: a mapping's key or a sequence's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// The value of a key.
    Key(String),
    /// An item of a sequence, from 0.
    Index(usize),
}

/// Writes a path the way users and `serde_path_to_error` write it: `tasks[0].with.env`.
pub fn path_text(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
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

/// How deep mappings and sequences may nest in a DAG file, the top-level mapping being level 1.
///
/// Everything after the reader walks trees recursively (conversion to JSON, templates, serde,
/// dropping a tree), and a DAG's values end up inside stored records and API answers, which
/// serde_json reads back with a recursion limit of 128. 64 levels leave room for the levels those
/// records and answers wrap around a value, and keep every recursive walk far from the end of a
/// 2 MiB thread stack, whatever the build.
pub const MAX_DEPTH: usize = 64;

/// The deepest a value under a top-level key's entry may nest (a parameter under `params:`): the
/// file's mapping and the key's mapping are two of the [`MAX_DEPTH`] levels. Values that reach the
/// store from elsewhere (`--param`, an operator's outputs) are held to the same depth, so every
/// record that holds them can be read back.
pub const MAX_VALUE_DEPTH: usize = MAX_DEPTH - 2;

/// How many levels of arrays and objects a JSON value is (0 for a scalar). serde_json parses at
/// most 128 levels, so this never recurses deeper than that.
pub fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The fewest nodes a file's expanded tree may always hold, however small the file.
pub const MIN_EXPANDED_NODES: usize = 100_000;

/// How many bytes of a file each node of its expanded tree may cost at least, above the floor.
pub const BYTES_PER_NODE: usize = 2;

/// The most nodes the tree of a file of `source_len` bytes may hold once aliases are expanded:
/// one node per [`BYTES_PER_NODE`] bytes of the file, and at least [`MIN_EXPANDED_NODES`].
///
/// A value written out costs its text and a separator (`x, ` or `- x` and a line break), so a
/// DAG file that copies nothing stays below this; aliases copy nodes without spending bytes, and
/// aliases of aliases grow exponentially ("billion laughs": 9 levels of 10 copies in 546 bytes
/// are a billion nodes). Every node and copy is counted before it is made, so a file stops at the
/// alias that would pass the bound, having used memory in proportion to its size (compile holds
/// a node in about 150 bytes, tree and JSON together: at most some 80 MB for a file of 1 MiB).
pub fn node_budget(source_len: usize) -> usize {
    (source_len / BYTES_PER_NODE).max(MIN_EXPANDED_NODES)
}

/// What made the nodes that passed the budget, for its error.
enum Spender {
    /// Values written out in the file.
    Written,
    /// The copy an anchor keeps, at the anchor's place.
    Anchor(Pos),
    /// The copy an alias makes, with the alias's name.
    Alias(String),
}

/// The result of parsing one file: its documents.
#[derive(Debug)]
pub struct Documents {
    /// The root node of each document, in order.
    pub roots: Vec<Node>,
    /// Where each document begins (`starts[i]` for `roots[i]`), for the "several documents" error.
    pub starts: Vec<Pos>,
    /// Mistakes that leave the tree usable (duplicate keys, keys that are mappings or lists), in
    /// the order found. The tree keeps the first of duplicate keys and drops collection keys, so
    /// no mapping holds a key twice.
    pub problems: Vec<Problem>,
}

/// A mistake in a mapping that the reader can leave out of the tree and go on.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where the mistake is: the repeated key, or the collection used as a key.
    pub pos: Pos,
    /// The path of the mapping that holds it, from the document's root (empty for the root).
    pub path: Vec<PathSegment>,
    /// What the mistake is.
    pub kind: ProblemKind,
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, PartialEq)]
pub enum ProblemKind {
    /// A key written a second time in one mapping.
    DuplicateKey {
        /// The key, as text.
        key: String,
        /// Where it was first written.
        first: Pos,
    },
    /// A mapping or sequence used as a key (JSON, and so every operator, has only text keys).
    CollectionKey {
        /// The key's type, as [`Node::type_name`] says it.
        found: &'static str,
    },
}

/// The text a key stands for once the tree becomes JSON (see [`Node::to_json`]), so keys that
/// JSON would merge (`1` and `"1"`) count as the same key. `None` for a mapping or sequence.
fn key_text(key: &Node) -> Option<String> {
    match &key.kind {
        NodeKind::Scalar(Scalar::Null) => Some(String::new()),
        NodeKind::Seq(_) | NodeKind::Map(_) => None,
        _ => key.scalar_text(),
    }
}

/// Parses YAML text into node trees, one per document, within [`MAX_DEPTH`] and
/// [`node_budget`].
pub fn parse(source: &str) -> Result<Documents, YamlError> {
    let mut builder = TreeBuilder::new(source);
    // The parser's own `load` recurses once per level of nesting; pulling events one by one keeps
    // the reader's stack flat, so the depth bound is checked before any recursion can happen.
    let mut parser = Parser::new_from_str(source);
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => return Err(scan_error(source, &e)),
        };
        if event == Event::StreamEnd {
            break;
        }
        builder.on_event(event, marker);
        if let Some(error) = builder.error.take() {
            return Err(error);
        }
    }
    Ok(Documents { roots: builder.roots, starts: builder.starts, problems: builder.problems })
}

fn scan_error(source: &str, e: &yaml_rust2::ScanError) -> YamlError {
    let pos = Pos::from_marker(e.marker());
    let (message, hint) = match e.info() {
        "while parsing node, found unknown anchor" => {
            // Name the alias: yaml-rust2 only says an anchor is unknown.
            let name = alias_name(source, pos);
            (format!("unknown alias {name}: no anchor &{} is defined before it", name.trim_start_matches('*')), None)
        }
        // The scanner's own bound on flow nesting (`[[[...`, 255 levels) comes before ours.
        "recursion limit exceeded" => (
            format!("mappings and lists nest deeper than {MAX_DEPTH} levels here; a DAG file may nest at most {MAX_DEPTH} levels"),
            Some(DEPTH_HINT.to_string()),
        ),
        "simple key expect ':'" => (
            "expected \":\" after this key".to_string(),
            Some("a key must fit on one line and in 1024 characters, and be followed by \": \"".to_string()),
        ),
        info if info.contains("tab") || indented_with_tab(source, pos) => (
            info.to_string(),
            Some("YAML indents with spaces only: replace the tab with spaces".to_string()),
        ),
        info => (info.to_string(), None),
    };
    YamlError { pos, message, hint }
}

/// Whether the line of `pos` has a tab before the position.
fn indented_with_tab(source: &str, pos: Pos) -> bool {
    source.lines().nth(pos.line.saturating_sub(1)).is_some_and(|l| l.chars().take(pos.col).any(|c| c == '\t'))
}

const DEPTH_HINT: &str = "flatten the value: no DAG setting needs that depth; pass deep data in a file the task reads";

/// The `*name` written at an alias's position.
fn alias_name(source: &str, pos: Pos) -> String {
    let name: String = source
        .lines()
        .nth(pos.line.saturating_sub(1))
        .unwrap_or_default()
        .chars()
        .skip(pos.col.saturating_sub(1))
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}'))
        .take(80)
        .collect();
    if name.starts_with('*') {
        name
    } else {
        "*".to_string()
    }
}

/// A container being filled while its events arrive.
enum Open {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Node, Node)>, pending_key: Option<Node> },
}

/// How many levels of containers a node is (0 for a scalar), and how many nodes its tree holds.
fn measure(node: &Node) -> (usize, usize) {
    match &node.kind {
        NodeKind::Scalar(_) => (0, 1),
        NodeKind::Seq(items) => items.iter().map(measure).fold((1, 1), |(h, s), (ih, is)| (h.max(ih + 1), s + is)),
        NodeKind::Map(entries) => entries.iter().fold((1, 1), |(h, s), (k, v)| {
            let ((kh, ks), (vh, vs)) = (measure(k), measure(v));
            (h.max(kh + 1).max(vh + 1), s + ks + vs)
        }),
    }
}

/// An anchored node, kept for the aliases that copy it.
struct Anchored {
    node: Node,
    /// How many levels of containers the node is (0 for a scalar).
    height: usize,
    /// How many nodes the node's tree holds.
    size: usize,
}

struct TreeBuilder<'s> {
    source: &'s str,
    stack: Vec<Open>,
    anchors: HashMap<usize, Anchored>,
    roots: Vec<Node>,
    starts: Vec<Pos>,
    /// The first error that stops the reader.
    error: Option<YamlError>,
    problems: Vec<Problem>,
    /// Nodes made so far, copies for anchors and aliases included.
    nodes: usize,
    /// The most [`TreeBuilder::nodes`] may reach.
    budget: usize,
}

impl<'s> TreeBuilder<'s> {
    fn new(source: &'s str) -> Self {
        TreeBuilder {
            source,
            stack: Vec::new(),
            anchors: HashMap::new(),
            roots: Vec::new(),
            starts: Vec::new(),
            error: None,
            problems: Vec::new(),
            nodes: 0,
            budget: node_budget(source.len()),
        }
    }

    fn fail(&mut self, pos: Pos, message: String, hint: &str) {
        if self.error.is_none() {
            self.error = Some(YamlError { pos, message, hint: Some(hint.to_string()) });
        }
    }

    /// Counts `count` more nodes, or fails (saying who made them) when they pass the budget.
    fn spend(&mut self, count: usize, pos: Pos, spender: impl FnOnce() -> Spender) -> bool {
        if let Some(total) = self.nodes.checked_add(count).filter(|total| *total <= self.budget) {
            self.nodes = total;
            return true;
        }
        let (budget, size) = (self.budget, self.source.len());
        let bound = format!("the most a file of {size} bytes may hold (one node per {BYTES_PER_NODE} bytes, at least {MIN_EXPANDED_NODES})");
        let copies_hint = "aliases of aliases grow exponentially (\"billion laughs\"): copy fewer or smaller anchored nodes, or write the values out";
        match spender() {
            Spender::Written => self.fail(
                pos,
                format!("the file holds more than {budget} values here, {bound}"),
                "write fewer, larger values; data this large belongs in a file the task reads",
            ),
            Spender::Anchor(at) => self.fail(
                pos,
                format!("the anchor at line {} column {} expands the file past {budget} nodes once copied, {bound}", at.line, at.col),
                copies_hint,
            ),
            Spender::Alias(name) => {
                self.fail(pos, format!("alias {name} expands the file past {budget} nodes, {bound}"), copies_hint)
            }
        }
        false
    }

    /// Adds a finished node to its container (or as a document's root).
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

    /// Opens a container, unless it would nest deeper than [`MAX_DEPTH`].
    fn open(&mut self, pos: Pos, container: Open) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(
                pos,
                format!("mappings and lists nest deeper than {MAX_DEPTH} levels here; a DAG file may nest at most {MAX_DEPTH} levels"),
                DEPTH_HINT,
            );
            return;
        }
        if self.spend(1, pos, || Spender::Written) {
            self.stack.push(container);
        }
    }

    /// The path from the document's root to the container being filled now.
    fn path(&self) -> Vec<PathSegment> {
        self.stack
            .iter()
            .map(|open| match open {
                Open::Seq { items, .. } => PathSegment::Index(items.len()),
                Open::Map { pending_key, .. } => {
                    PathSegment::Key(pending_key.as_ref().and_then(key_text).unwrap_or_else(|| "?".to_string()))
                }
            })
            .collect()
    }

    fn finish_map(&mut self, pos: Pos, entries: Vec<(Node, Node)>) -> Node {
        // yaml-rust2 marks a block mapping at the `:` after its first key; the mapping starts at
        // that key (a flow mapping's `{` comes first and is kept).
        let pos = entries.first().map_or(pos, |(key, _)| {
            if (key.pos.line, key.pos.col) < (pos.line, pos.col) { key.pos } else { pos }
        });
        let mut own: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        let mut own_keys: HashMap<String, Pos> = HashMap::with_capacity(entries.len());
        let mut inherited: Vec<(Node, Node)> = Vec::new();
        let mut inherited_keys: HashSet<String> = HashSet::new();
        for (key, value) in entries {
            let is_merge = matches!(&key.kind, NodeKind::Scalar(Scalar::Str(s)) if s == "<<");
            if is_merge {
                // `<<: *a` or `<<: [*a, *b]`: earlier sources win over later ones, and the
                // mapping's own keys win over all of them (YAML merge key specification).
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
                                // A source's keys are unique and text already (it was read here).
                                if inherited_keys.insert(key_text(&k).unwrap_or_default()) {
                                    inherited.push((k, v));
                                }
                            }
                        }
                        _ => self.fail(
                            merge_pos,
                            format!("a merge key (<<) needs a mapping or a list of mappings, found {}", source.type_name()),
                            "write `<<: *name` where `&name` anchors a mapping, or `<<: [*a, *b]`",
                        ),
                    }
                }
                continue;
            }
            let Some(text) = key_text(&key) else {
                let path = self.path();
                self.problems.push(Problem { pos: key.pos, path, kind: ProblemKind::CollectionKey { found: key.type_name() } });
                continue;
            };
            if let Some(first) = own_keys.get(&text) {
                let path = self.path();
                self.problems.push(Problem { pos: key.pos, path, kind: ProblemKind::DuplicateKey { key: text, first: *first } });
                continue;
            }
            own_keys.insert(text, key.pos);
            own.push((key, value));
        }
        for (k, v) in inherited {
            if !own_keys.contains_key(&key_text(&k).unwrap_or_default()) {
                own.push((k, v));
            }
        }
        Node { pos, kind: NodeKind::Map(own) }
    }

    /// Keeps a copy of an anchored node for its aliases; the copy counts against the budget.
    fn record_anchor(&mut self, anchor: usize, node: &Node) {
        if anchor == 0 {
            return;
        }
        let (height, size) = measure(node);
        if self.spend(size, node.pos, || Spender::Anchor(node.pos)) {
            self.anchors.insert(anchor, Anchored { node: node.clone(), height, size });
        }
    }

    /// Copies an anchored node where an alias names it, within the depth bound and the budget.
    fn alias(&mut self, anchor: usize, pos: Pos) {
        let Some(anchored) = self.anchors.get(&anchor) else {
            self.push_node(Node { pos, kind: NodeKind::Scalar(Scalar::Null) });
            return;
        };
        let (height, size) = (anchored.height, anchored.size);
        let source = self.source;
        if self.stack.len() + height > MAX_DEPTH {
            let name = alias_name(source, pos);
            self.fail(
                pos,
                format!(
                    "alias {name} copies {height} levels of nesting to {} levels deep, past the {MAX_DEPTH} levels a DAG file may nest",
                    self.stack.len()
                ),
                "anchor a flatter value, or write the value out here",
            );
            return;
        }
        if !self.spend(size, pos, || Spender::Alias(alias_name(source, pos))) {
            return;
        }
        let node = self.anchors.get(&anchor).map(|a| a.node.clone()).unwrap_or(Node { pos, kind: NodeKind::Scalar(Scalar::Null) });
        self.push_node(node);
    }

    fn on_event(&mut self, event: Event, marker: Marker) {
        let pos = Pos::from_marker(&marker);
        match event {
            Event::DocumentStart => {
                // An alias never reaches into another document.
                self.anchors.clear();
                self.starts.push(pos);
            }
            Event::Scalar(value, style, anchor, tag) => {
                if !self.spend(1, pos, || Spender::Written) {
                    return;
                }
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
            Event::Alias(anchor) => self.alias(anchor, pos),
            Event::SequenceStart(anchor, _) => {
                self.open(pos, Open::Seq { pos, anchor, items: Vec::new() });
            }
            Event::MappingStart(anchor, _) => {
                self.open(pos, Open::Map { pos, anchor, entries: Vec::new(), pending_key: None });
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

    /// `n` levels of anchors, each a list of ten aliases of the one before: 10^n scalars.
    fn laughs(levels: usize) -> String {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..levels {
            let copies = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{copies}]\n"));
        }
        text
    }

    #[test]
    fn alias_expansion_stops_at_the_alias_that_passes_the_budget() {
        // 9 levels are a billion nodes; the reader stops at the alias that passes 100,000.
        let text = laughs(9);
        let err = parse(&text).unwrap_err();
        assert_eq!(err.pos.line, 5, "{err:?}");
        assert!(
            err.message.starts_with(&format!(
                "alias *a3 expands the file past 100000 nodes, the most a file of {} bytes may hold (one node per 2 bytes, at least 100000)",
                text.len()
            )),
            "{err:?}"
        );
        assert!(err.hint.as_deref().unwrap_or_default().contains("billion laughs"), "{err:?}");
        // Three levels are a thousand nodes: well within the budget.
        assert!(parse(&laughs(3)).is_ok());
    }

    #[test]
    fn the_budget_grows_with_the_file() {
        assert_eq!(node_budget(10), MIN_EXPANDED_NODES);
        assert_eq!(node_budget(6 * MIN_EXPANDED_NODES), 3 * MIN_EXPANDED_NODES);
        // A list of one-character values, the densest a file can write values, stays below it.
        let dense = format!("l: [{}]\n", "1, ".repeat(400_000));
        assert!(parse(&dense).is_ok());
        // A wide anchor copied many times passes the floor even without nesting.
        let items = vec!["x"; 1000].join(", ");
        let copies = vec!["*wide"; 200].join(", ");
        let err = parse(&format!("w: &wide [{items}]\ncopies: [{copies}]\n")).unwrap_err();
        assert!(err.message.starts_with("alias *wide expands the file past 100000 nodes"), "{err:?}");
    }

    #[test]
    fn merge_keys_count_their_copies() {
        // Merging dedupes keys, so a merge of the same mapping many times stays small...
        let mut text = String::from("m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}\n");
        for i in 1..40 {
            let sources = vec![format!("*m{}", i - 1); 10].join(", ");
            text.push_str(&format!("m{i}: &m{i} {{<<: [{sources}], k{i}: {i}}}\n"));
        }
        assert!(parse(&text).is_ok());
        // ...but what the merged mappings hold is copied with them, and counted.
        let mut bomb = String::from("m0: &m0 {v: [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]}\n");
        for i in 1..9 {
            let copies = vec![format!("*m{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("m{i}: &m{i} {{<<: *m{}, v: [{copies}]}}\n", i - 1));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.message.starts_with("alias *m"), "{err:?}");
    }

    #[test]
    fn anchors_nested_in_anchors_count_their_copies() {
        // No alias at all: each anchor keeps a copy of everything under it.
        let leaf = vec!["x"; 3000].join(", ");
        let opening: String = (0..60).map(|i| format!("&n{i} [")).collect();
        let err = parse(&format!("deep: {opening}{leaf}{}\n", "]".repeat(60))).unwrap_err();
        assert!(err.message.starts_with("the anchor at line 1 column "), "{err:?}");
        assert!(err.message.contains(" expands the file past 100000 nodes once copied"), "{err:?}");
    }

    #[test]
    fn nesting_stops_at_the_depth_bound_in_every_style() {
        let message = "mappings and lists nest deeper than 64 levels here; a DAG file may nest at most 64 levels";
        let flow = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        let err = parse(&flow).unwrap_err();
        assert_eq!(err.pos, Pos { line: 1, col: 67 }, "the 65th level: {err:?}");
        assert_eq!(err.message, message);
        // Past 255 levels of brackets the scanner stops first, with the same message.
        let flow = format!("a: {}{}\n", "[".repeat(3000), "]".repeat(3000));
        assert_eq!(parse(&flow).unwrap_err().message, message);
        let mapping: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert_eq!(parse(&mapping).unwrap_err().pos.line, 65);
        let sequence = format!("{}x\n", "- ".repeat(200));
        assert!(parse(&sequence).unwrap_err().message.starts_with("mappings and lists nest deeper than 64 levels"));
        // Unclosed brackets stop at the bound too, before the end of the file is reached.
        assert!(parse(&"{a: ".repeat(10_000)).unwrap_err().message.starts_with("mappings and lists nest deeper"));
        // 64 levels are fine.
        let ok = format!("{}{}\n", "[".repeat(64), "]".repeat(64));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn an_alias_may_not_carry_its_anchor_past_the_depth_bound() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let text = format!("a: &deep {deep}\nb: {}*deep{}\n", "[".repeat(30), "]".repeat(30));
        let err = parse(&text).unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, col: 34 });
        assert_eq!(err.message, "alias *deep copies 40 levels of nesting to 31 levels deep, past the 64 levels a DAG file may nest");
    }

    #[test]
    fn duplicate_keys_are_problems_at_every_depth_and_the_first_is_kept() {
        let docs = parse("a: 1\nb:\n  c: [{d: 1, d: 2}]\n  e: x\n  e: y\na: 3\n1: one\n'1': uno\n").unwrap();
        let found: Vec<(String, usize, usize)> = docs
            .problems
            .iter()
            .map(|p| match &p.kind {
                ProblemKind::DuplicateKey { key, first } => (format!("{} {key}", path_text(&p.path)), p.pos.line, first.line),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(found, [("b.c[0] d".to_string(), 3, 3), ("b e".to_string(), 5, 4), (" a".to_string(), 6, 1), (" 1".to_string(), 8, 7)]);
        let json = docs.roots[0].to_json();
        assert_eq!(json["a"], 1);
        assert_eq!(json["b"]["c"][0]["d"], 1);
        assert_eq!(json["b"]["e"], "x");
        assert_eq!(json["1"], "one");
    }

    #[test]
    fn keys_that_are_collections_are_problems_and_left_out() {
        let docs = parse("p:\n  ? [a, b]\n  : c\n  ok: 1\n").unwrap();
        assert_eq!(docs.problems.len(), 1);
        assert_eq!(docs.problems[0].kind, ProblemKind::CollectionKey { found: "a list" });
        assert_eq!(path_text(&docs.problems[0].path), "p");
        assert_eq!(docs.roots[0].to_json(), serde_json::json!({"p": {"ok": 1}}));
    }

    #[test]
    fn a_tab_in_the_indentation_says_so() {
        let err = parse("dag: a\ntasks:\n\t- id: x\n").unwrap_err();
        assert_eq!(err.hint.as_deref(), Some("YAML indents with spaces only: replace the tab with spaces"), "{err:?}");
    }

    #[test]
    fn json_depth_counts_containers() {
        assert_eq!(json_depth(&serde_json::json!(1)), 0);
        assert_eq!(json_depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    }

    #[test]
    fn locate_follows_serde_paths() {
        let node = root("steps:\n  - name: a\n  - name: b\n    args: [1]\n");
        assert_eq!(node.locate("steps[1].args").pos.line, 4);
        assert_eq!(node.locate("steps[1].missing").pos.line, 3);
    }
}

//! Where things are in the config text. Owns field paths (`routes[0].split.green`), turning a
//! path or a byte span into `file:line:col`, and running serde section by section so that every
//! unknown key and type error is reported, not only the first. Knows nothing of the rules.

use std::fmt;
use std::ops::Range;

use toml_edit::{
    Array, ArrayOfTables, DocumentMut, ImDocument, Item, Key, Table, TableLike, Value,
};

use super::raw::RawConfig;
use super::{ConfigError, Location};

/// One step of a field path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A field path, kept structured so that finding it in the text is exact even when a key holds
/// a dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    pub(crate) fn root() -> Self {
        Self::default()
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One problem found by validation or compilation, before it is given a place in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issue {
    pub path: FieldPath,
    pub message: String,
}

impl Issue {
    /// Without a source (JSON input): no location.
    pub(crate) fn unplaced(self) -> ConfigError {
        ConfigError {
            location: None,
            path: self.path.to_string(),
            message: self.message,
        }
    }
}

/// A parsed TOML text, kept to place errors.
pub(crate) struct Source<'a> {
    text: &'a str,
    file: &'a str,
    doc: ImDocument<&'a str>,
}

impl<'a> Source<'a> {
    /// Parses the text; a syntax error comes back with its place.
    pub(crate) fn parse(text: &'a str, file: &'a str) -> Result<Self, ConfigError> {
        match ImDocument::parse(text) {
            Ok(doc) => Ok(Self { text, file, doc }),
            Err(e) => {
                let at = e.span().map(|s| s.start);
                let mut message = clean(e.message());
                if message.is_empty() {
                    message = unexpected(text, at);
                }
                Err(ConfigError {
                    location: at.map(|at| location(text, file, at)),
                    path: String::new(),
                    message,
                })
            }
        }
    }

    /// Deserializes the whole text; on failure, every section's first serde error.
    pub(crate) fn deserialize(&self) -> Result<RawConfig, Vec<ConfigError>> {
        let whole = match toml::from_str::<RawConfig>(self.text) {
            Ok(raw) => return Ok(raw),
            Err(e) => e,
        };
        let mut errors: Vec<(usize, ConfigError)> = Vec::new();
        for (key, item) in self.doc.as_table().iter() {
            let Some((key, _)) = self.doc.as_table().get_key_value(key) else {
                continue;
            };
            for (path, table) in sections(key, item) {
                if let Err(e) = toml_edit::de::from_document::<RawConfig>(DocumentMut::from(table))
                {
                    errors.push(self.serde_error(e.message(), e.span(), &path));
                }
            }
        }
        if errors.is_empty() {
            errors.push(self.serde_error(whole.message(), whole.span(), &FieldPath::root()));
        }
        errors.sort_by_key(|(at, _)| *at);
        errors.dedup_by(|a, b| a.1 == b.1);
        Err(errors.into_iter().map(|(_, e)| e).collect())
    }

    /// Places a validation issue: the span of its path, or of the nearest parent that has one.
    pub(crate) fn place(&self, issue: Issue) -> ConfigError {
        let location = self
            .span_of(&issue.path)
            .map(|s| location(self.text, self.file, s.start));
        ConfigError {
            location,
            path: issue.path.to_string(),
            message: issue.message,
        }
    }

    /// A serde error with its place; the offset sorts errors in text order.
    fn serde_error(
        &self,
        message: &str,
        span: Option<Range<usize>>,
        fallback: &FieldPath,
    ) -> (usize, ConfigError) {
        let (path, start) = match span {
            Some(span) => {
                let path = self.path_at(&span).unwrap_or_else(|| fallback.clone());
                (path, Some(span.start))
            }
            None => (fallback.clone(), self.span_of(fallback).map(|s| s.start)),
        };
        let error = ConfigError {
            location: start.map(|s| location(self.text, self.file, s)),
            path: path.to_string(),
            message: clean(message),
        };
        (start.unwrap_or(usize::MAX), error)
    }

    /// The span of the item at `path` (for a key without its own span, the key's), or of the
    /// nearest parent with one.
    fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        let mut node = Node::Table(self.doc.as_table());
        let mut best = None;
        for seg in &path.0 {
            let Some((key_span, child)) = node.child(seg) else {
                break;
            };
            best = child.span().or(key_span).or(best);
            node = child;
        }
        best
    }

    /// The path of the smallest key or item whose span holds `span`.
    fn path_at(&self, span: &Range<usize>) -> Option<FieldPath> {
        let mut best: Option<(usize, FieldPath)> = None;
        find(
            Node::Table(self.doc.as_table()),
            &FieldPath::root(),
            span,
            &mut best,
        );
        best.map(|(_, p)| p)
    }
}

/// Splits a top-level entry into one-entry documents: one per pool and one per route, so that
/// each gets its own serde error.
fn sections(key: &Key, item: &Item) -> Vec<(FieldPath, Table)> {
    let path = FieldPath::root().key(key.get());
    let wrap = |inner: Item| {
        let mut root = Table::new();
        root.insert_formatted(key, inner);
        root
    };
    match (key.get(), item) {
        ("pools", item) if item.is_table_like() => {
            let Some(pools) = item.as_table_like() else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (name, _) in pools.iter() {
                if let Some((name_key, pool)) = pools.get_key_value(name) {
                    let mut one = Table::new();
                    one.insert_formatted(name_key, pool.clone());
                    out.push((path.key(name), wrap(Item::Table(one))));
                }
            }
            out
        }
        ("routes", Item::ArrayOfTables(routes)) => routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let mut one = ArrayOfTables::new();
                one.push(route.clone());
                (path.index(i), wrap(Item::ArrayOfTables(one)))
            })
            .collect(),
        ("routes", Item::Value(Value::Array(routes))) => routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let mut one = Array::new();
                one.push_formatted(route.clone());
                (path.index(i), wrap(Item::Value(Value::Array(one))))
            })
            .collect(),
        _ => vec![(path, wrap(item.clone()))],
    }
}

fn find(
    node: Node<'_>,
    path: &FieldPath,
    span: &Range<usize>,
    best: &mut Option<(usize, FieldPath)>,
) {
    for (seg, key_span, child) in node.children() {
        let child_path = match seg {
            Seg::Key(k) => path.key(&k),
            Seg::Index(i) => path.index(i),
        };
        for candidate in [key_span, child.span()].into_iter().flatten() {
            let holds = candidate.start <= span.start && span.end <= candidate.end;
            let len = candidate.end - candidate.start;
            let smaller = match best {
                Some((l, _)) => len <= *l,
                None => true,
            };
            if holds && len > 0 && smaller {
                *best = Some((len, child_path.clone()));
            }
        }
        find(child, &child_path, span, best);
    }
}

/// A place in the parsed document: tables of arrays and values of arrays are not `Item`s.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn element(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(index).map(Node::Table),
            Node::Item(Item::Value(v)) | Node::Value(v) => {
                v.as_array()?.get(index).map(Node::Value)
            }
            _ => None,
        }
    }

    fn len(self) -> usize {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.len(),
            Node::Item(Item::Value(v)) | Node::Value(v) => v.as_array().map_or(0, Array::len),
            _ => 0,
        }
    }

    /// The child at `seg`, with the span of its key when it has one.
    fn child(self, seg: &Seg) -> Option<(Option<Range<usize>>, Node<'a>)> {
        match seg {
            Seg::Key(k) => {
                let (key, item) = self.table_like()?.get_key_value(k)?;
                Some((key.span(), Node::Item(item)))
            }
            Seg::Index(i) => self.element(*i).map(|n| (None, n)),
        }
    }

    fn children(self) -> Vec<(Seg, Option<Range<usize>>, Node<'a>)> {
        if let Some(table) = self.table_like() {
            return table
                .iter()
                .filter_map(|(k, _)| table.get_key_value(k))
                .map(|(key, item)| (Seg::Key(key.get().to_owned()), key.span(), Node::Item(item)))
                .collect();
        }
        (0..self.len())
            .filter_map(|i| self.element(i).map(|n| (Seg::Index(i), None, n)))
            .collect()
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn location(text: &str, file: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        file: file.to_owned(),
        line: before.matches('\n').count() + 1,
        col: before[line_start..].chars().count() + 1,
    }
}

/// One line: the parser's multi-line messages joined.
fn clean(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

/// What to say where the TOML parser says nothing (a control character in a comment): the
/// character it stopped at.
fn unexpected(text: &str, at: Option<usize>) -> String {
    match at
        .and_then(|i| text.get(i..))
        .and_then(|rest| rest.chars().next())
    {
        Some(c) => format!("invalid TOML: unexpected character {c:?}"),
        None => "invalid TOML".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> FieldPath {
        FieldPath::root()
    }

    #[test]
    fn paths_format_like_toml() {
        assert_eq!(
            path()
                .key("routes")
                .index(0)
                .key("split")
                .key("green")
                .to_string(),
            "routes[0].split.green"
        );
        assert_eq!(
            path()
                .key("pools")
                .key("blue")
                .key("servers")
                .index(1)
                .to_string(),
            "pools.blue.servers[1]"
        );
        assert_eq!(path().key("pools").key("a.b").to_string(), "pools.\"a.b\"");
        assert_eq!(
            path().key("admin").key("listen").to_string(),
            "admin.listen"
        );
    }

    #[test]
    fn lines_and_columns_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(
            location(text, "f", 0),
            Location {
                file: "f".into(),
                line: 1,
                col: 1
            }
        );
        assert_eq!(location(text, "f", 6).line, 2);
        let at = text.find("= 2").unwrap();
        assert_eq!(
            (location(text, "f", at).line, location(text, "f", at).col),
            (2, 4)
        );
    }

    const TEXT: &str = "[pools.blue]\nservers = [\"a:1\", { addr = \"b:2\", weight = 0 }]\n\n\
        [[routes]]\nname = \"web\"\nsplit.blue = 5\nsplit.green = 0\n\n[[routes.pin]]\nsource = [\"x\"]\npool = \"blue\"\n";

    fn at(src: &Source<'_>, path: FieldPath) -> (usize, usize) {
        let e = src.place(Issue {
            path,
            message: String::new(),
        });
        let l = e.location.unwrap();
        (l.line, l.col)
    }

    #[test]
    fn paths_resolve_to_their_values() {
        let src = Source::parse(TEXT, "t.toml").unwrap();
        let servers = path().key("pools").key("blue").key("servers");
        assert_eq!(at(&src, servers.index(1).key("weight")), (2, 44));
        assert_eq!(at(&src, servers.index(0)), (2, 12));
        assert_eq!(
            at(
                &src,
                path().key("routes").index(0).key("split").key("green")
            ),
            (7, 15)
        );
        assert_eq!(at(&src, path().key("routes").index(0).key("split")), (6, 1));
        assert_eq!(
            at(
                &src,
                path()
                    .key("routes")
                    .index(0)
                    .key("pin")
                    .index(0)
                    .key("source")
                    .index(0)
            ),
            (10, 11)
        );
    }

    #[test]
    fn a_missing_path_falls_back_to_its_parent() {
        let src = Source::parse(TEXT, "t.toml").unwrap();
        assert_eq!(
            at(
                &src,
                path().key("routes").index(0).key("mirror").key("pool")
            ),
            (4, 1)
        );
        let e = src.place(Issue {
            path: path().key("admin"),
            message: String::new(),
        });
        assert_eq!(e.location, None);
    }

    #[test]
    fn spans_resolve_to_paths() {
        let src = Source::parse(TEXT, "t.toml").unwrap();
        let green = TEXT.find("green").unwrap();
        let p = src.path_at(&(green..green + 5)).unwrap();
        assert_eq!(p.to_string(), "routes[0].split.green");
        let weight = TEXT.find("0 }").unwrap();
        assert_eq!(
            src.path_at(&(weight..weight + 1)).unwrap().to_string(),
            "pools.blue.servers[1].weight"
        );
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let Err(e) = Source::parse("a = 1\n[b\n", "x.toml") else {
            panic!("parsed")
        };
        let l = e.location.unwrap();
        assert_eq!((l.file.as_str(), l.line), ("x.toml", 2));
    }
}

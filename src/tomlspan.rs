//! Spanned TOML: parse a document once, then deserialize each table on its own, so that
//! one bad `[[route]]` does not hide the errors of the others and every error keeps its
//! byte span in the original file.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::diag::SourceFile;

/// Parses a whole document, recording every syntax error. `None` when there was any.
pub fn parse_document<'i>(src: &mut SourceFile, text: &'i str) -> Option<DeTable<'i>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Some(doc.into_inner());
    }
    for e in &errors {
        src.toml_error(e);
    }
    None
}

/// Deserializes one spanned value into `T`, recording the error (unknown key, wrong type,
/// missing field) at its place in the file.
pub fn deserialize<T: DeserializeOwned>(
    src: &mut SourceFile,
    value: Spanned<DeValue<'_>>,
) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            src.toml_error(&e);
            None
        }
    }
}

/// Reports keys of a top-level table that are not in `known`; returns the table's
/// remaining entries by name.
pub fn split_top_level<'i>(
    src: &mut SourceFile,
    table: DeTable<'i>,
    known: &[&str],
) -> Vec<(String, Spanned<DeValue<'i>>)> {
    let mut out = Vec::new();
    for (key, value) in table {
        let name = key.get_ref().to_string();
        if known.contains(&name.as_str()) {
            out.push((name, value));
        } else {
            src.error(
                Some(key.span()),
                format!(
                    "unknown key `{name}`, expected one of: {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    out
}

/// The keys a table may hold, and the shapes of the sub-tables among them.
pub struct Shape<'a> {
    pub keys: &'a [&'a str],
    pub tables: &'a [(&'a str, Shape<'a>)],
}

/// Removes the keys of a table (and of its known sub-tables) that its shape does not
/// name, recording each as an error, so that one typo (`precent = 20`) does not hide the
/// table's other problems behind it. Returns the dropped keys, dotted ("match.pth").
pub fn drop_unknown(
    src: &mut SourceFile,
    value: &mut Spanned<DeValue<'_>>,
    shape: &Shape,
) -> Vec<String> {
    let mut dropped = Vec::new();
    let DeValue::Table(table) = value.get_mut() else {
        return dropped;
    };
    let given = std::mem::replace(table, DeTable::new());
    for (key, sub) in given {
        let name: &str = key.get_ref();
        if shape.keys.contains(&name) {
            table.insert(key, sub);
            continue;
        }
        let listed = shape
            .keys
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint =
            closest(name, shape.keys).map_or(String::new(), |k| format!("; did you mean `{k}`?"));
        src.error(
            Some(key.span()),
            format!("unknown field `{name}`, expected one of {listed}{hint}"),
        );
        dropped.push(name.to_string());
    }
    for (key, sub) in table.iter_mut() {
        let name: &str = key.get_ref();
        if let Some((_, shape)) = shape.tables.iter().find(|(k, _)| *k == name) {
            // `[[route.cohort]]`: each table of the array has the shape.
            if let DeValue::Array(items) = sub.get_mut() {
                for item in items.iter_mut() {
                    let inner = drop_unknown(src, item, shape);
                    dropped.extend(inner.into_iter().map(|k| format!("{name}.{k}")));
                }
                continue;
            }
            let inner = drop_unknown(src, sub, shape);
            dropped.extend(inner.into_iter().map(|k| format!("{name}.{k}")));
        }
    }
    dropped
}

/// The known key a typo most likely meant: at most two edits away.
fn closest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::osa_distance(typo, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A duration written as text ("250ms", "5s", "1m 30s").
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct DurationText(pub Spanned<String>);

impl DurationText {
    pub fn parse(&self, src: &mut SourceFile, what: &str) -> Option<std::time::Duration> {
        match humantime::parse_duration(self.0.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                src.error(
                    Some(self.0.span()),
                    format!(
                        "{what}: `{}` is not a duration ({e}); write e.g. \"500ms\" or \"5s\"",
                        self.0.get_ref()
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        size: Option<i64>,
    }

    #[test]
    fn each_table_reports_its_own_error_with_absolute_position() {
        let text =
            "[[item]]\nname = \"a\"\nsise = 3\n\n[[item]]\nname = 5\n\n[[item]]\nname = \"ok\"\n";
        let mut src = SourceFile::new(Path::new("t.toml"), text);
        let doc = parse_document(&mut src, text).expect("valid syntax");
        let mut parsed = Vec::new();
        for (_, value) in split_top_level(&mut src, doc, &["item"]) {
            let DeValue::Array(items) = value.into_inner() else {
                panic!("array expected")
            };
            for item in items {
                parsed.push(deserialize::<Item>(&mut src, item));
            }
        }
        assert_eq!(parsed.len(), 3);
        assert!(parsed[0].is_none() && parsed[1].is_none() && parsed[2].is_some());
        let lines: Vec<String> = src.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            lines[0].starts_with("t.toml:3:1: error: unknown field `sise`"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("t.toml:6:8: error: invalid type"),
            "{lines:?}"
        );
    }

    #[test]
    fn unknown_keys_are_dropped_with_a_hint_and_the_rest_still_read() {
        let text = "[[item]]\nname = \"a\"\nsise = 3\nsub.colour = 1\nsub.x = 2\n";
        let mut src = SourceFile::new(Path::new("t.toml"), text);
        let doc = parse_document(&mut src, text).expect("valid syntax");
        let shape = Shape {
            keys: &["name", "size", "sub"],
            tables: &[(
                "sub",
                Shape {
                    keys: &["color", "x"],
                    tables: &[],
                },
            )],
        };
        for (_, value) in split_top_level(&mut src, doc, &["item"]) {
            let DeValue::Array(items) = value.into_inner() else {
                panic!("array expected")
            };
            for mut item in items {
                let dropped = drop_unknown(&mut src, &mut item, &shape);
                assert_eq!(dropped, ["sise", "sub.colour"]);
                let DeValue::Table(t) = item.get_ref() else {
                    panic!("table expected")
                };
                assert_eq!(t.len(), 2, "name and sub are kept");
            }
        }
        let lines: Vec<String> = src.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("t.toml:3:1: error: unknown field `sise`"),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("did you mean `size`?"), "{lines:?}");
        assert!(lines[1].contains("unknown field `colour`"), "{lines:?}");
        assert!(lines[1].ends_with("did you mean `color`?"), "{lines:?}");
    }

    #[test]
    fn only_near_misses_get_a_hint() {
        assert_eq!(closest("precent", &["percent", "target"]), Some("percent"));
        assert_eq!(closest("zzzzz", &["percent"]), None);
    }

    #[test]
    fn syntax_errors_are_all_reported() {
        let text = "a = \nb = [1,\n";
        let mut src = SourceFile::new(Path::new("t.toml"), text);
        assert!(parse_document(&mut src, text).is_none());
        assert!(!src.diagnostics.is_empty());
        assert!(src.diagnostics.iter().all(|d| d.line >= 1));
    }

    #[test]
    fn unknown_top_level_keys_are_named() {
        let text = "routes = 1\nroute = []\n";
        let mut src = SourceFile::new(Path::new("t.toml"), text);
        let doc = parse_document(&mut src, text).expect("valid syntax");
        let kept = split_top_level(&mut src, doc, &["route"]);
        assert_eq!(kept.len(), 1);
        assert_eq!(src.diagnostics.len(), 1);
        assert!(src.diagnostics[0]
            .to_string()
            .starts_with("t.toml:1:1: error: unknown key `routes`"));
    }
}

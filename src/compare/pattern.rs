//! Field paths inside a JSON body and the patterns that select them: RFC 6901 pointers
//! with `*` standing for any one segment ("/items/*/etag"). Used both for the `ignore`
//! list a person writes and for noise that banyan learns.

use std::fmt::Write as _;

/// One step from a JSON value to a child, borrowed from the document being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// An owned step, kept in differences and learned noise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedSeg {
    Key(String),
    Index(usize),
    /// Any one segment: array positions in learned noise, `*` in patterns.
    Any,
}

impl From<Seg<'_>> for OwnedSeg {
    fn from(s: Seg<'_>) -> Self {
        match s {
            Seg::Key(k) => OwnedSeg::Key(k.to_string()),
            Seg::Index(i) => OwnedSeg::Index(i),
        }
    }
}

/// A pointer as text: "" is the whole document, "/a/0/b~1c" the key "b/c" under a[0].
pub fn pointer_text(segs: &[OwnedSeg]) -> String {
    let mut out = String::new();
    for s in segs {
        out.push('/');
        match s {
            OwnedSeg::Key(k) => {
                for c in k.chars() {
                    match c {
                        '~' => out.push_str("~0"),
                        '/' => out.push_str("~1"),
                        c => out.push(c),
                    }
                }
            }
            OwnedSeg::Index(i) => {
                let _ = write!(out, "{i}");
            }
            OwnedSeg::Any => out.push('*'),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatSeg {
    Any,
    /// A literal segment; matches an object key equal to it, or an array position when it
    /// is a number.
    Lit {
        text: String,
        index: Option<usize>,
    },
}

impl PatSeg {
    fn matches(&self, seg: &Seg) -> bool {
        match (self, seg) {
            (PatSeg::Any, _) => true,
            (PatSeg::Lit { text, .. }, Seg::Key(k)) => text == k,
            (PatSeg::Lit { index, .. }, Seg::Index(i)) => *index == Some(*i),
        }
    }
}

/// A set of pointer patterns. A pattern selects a value and everything below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    list: Vec<Vec<PatSeg>>,
    /// Deeper paths than this cannot match, so the walk stops asking.
    max_depth: usize,
}

impl Patterns {
    /// Parses pointers; "/" separated, `~1` for '/', `~0` for '~', `*` for any segment.
    /// Text that does not start with '/' (other than "") is not a pointer and is skipped;
    /// validation reports it before it gets here.
    pub fn parse<'s>(pointers: impl IntoIterator<Item = &'s str>) -> Patterns {
        let mut p = Patterns::default();
        for text in pointers {
            if text.is_empty() {
                p.push(Vec::new());
            } else if let Some(rest) = text.strip_prefix('/') {
                let segs = rest
                    .split('/')
                    .map(|raw| {
                        if raw == "*" {
                            PatSeg::Any
                        } else {
                            let text = raw.replace("~1", "/").replace("~0", "~");
                            let index = text.parse().ok();
                            PatSeg::Lit { text, index }
                        }
                    })
                    .collect();
                p.push(segs);
            }
        }
        p
    }

    /// Patterns from learned paths (where `Any` stands for array positions).
    pub fn from_paths<'p>(paths: impl IntoIterator<Item = &'p [OwnedSeg]>) -> Patterns {
        let mut p = Patterns::default();
        for path in paths {
            p.push(
                path.iter()
                    .map(|s| match s {
                        OwnedSeg::Any => PatSeg::Any,
                        OwnedSeg::Key(k) => PatSeg::Lit {
                            text: k.clone(),
                            index: None,
                        },
                        OwnedSeg::Index(i) => PatSeg::Lit {
                            text: i.to_string(),
                            index: Some(*i),
                        },
                    })
                    .collect(),
            );
        }
        p
    }

    fn push(&mut self, segs: Vec<PatSeg>) {
        self.max_depth = self.max_depth.max(segs.len());
        self.list.push(segs);
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether a pattern selects exactly this path.
    pub fn selects(&self, path: &[Seg]) -> bool {
        if path.len() > self.max_depth {
            return false;
        }
        self.list
            .iter()
            .any(|p| p.len() == path.len() && p.iter().zip(path).all(|(pat, seg)| pat.matches(seg)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_select_one_segment_and_numbers_select_positions() {
        let p = Patterns::parse(["/items/*/etag", "/meta/generated_at", "/list/0", "/a~1b"]);
        assert!(p.selects(&[Seg::Key("items"), Seg::Index(3), Seg::Key("etag")]));
        assert!(p.selects(&[Seg::Key("items"), Seg::Key("x"), Seg::Key("etag")]));
        assert!(!p.selects(&[Seg::Key("items"), Seg::Index(3)]));
        assert!(!p.selects(&[Seg::Key("items"), Seg::Index(3), Seg::Key("id")]));
        assert!(p.selects(&[Seg::Key("meta"), Seg::Key("generated_at")]));
        assert!(p.selects(&[Seg::Key("list"), Seg::Index(0)]));
        assert!(p.selects(&[Seg::Key("list"), Seg::Key("0")]));
        assert!(!p.selects(&[Seg::Key("list"), Seg::Index(1)]));
        assert!(p.selects(&[Seg::Key("a/b")]));
        assert!(!Patterns::parse(["/x"]).selects(&[]));
        assert!(Patterns::parse([""]).selects(&[]));
    }

    #[test]
    fn pointers_escape_and_learned_paths_round_trip() {
        let path = vec![
            OwnedSeg::Key("a/b~c".into()),
            OwnedSeg::Any,
            OwnedSeg::Index(2),
        ];
        assert_eq!(pointer_text(&path), "/a~1b~0c/*/2");
        let p = Patterns::from_paths([path.as_slice()]);
        assert!(p.selects(&[Seg::Key("a/b~c"), Seg::Index(9), Seg::Index(2)]));
        assert_eq!(p, Patterns::parse(["/a~1b~0c/*/2"]));
    }
}

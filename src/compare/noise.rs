//! Learned noise: fields that differ between two answers of the monolith to the same
//! request (timestamps, request ids, random tokens). They would differ between legacy and
//! the new service too, so they are left out of mismatches and listed for people instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;

use super::pattern::Patterns;
use super::{Difference, Field, Noise};

#[derive(Debug, Default)]
pub struct NoiseTable {
    /// Each noisy field (array positions generalized) and how often it was seen to differ.
    fields: BTreeMap<Field, u64>,
    compiled: Arc<Noise>,
    /// Pairs of legacy answers compared so far.
    samples: u64,
}

impl NoiseTable {
    /// Records one comparison of two legacy answers; returns whether a new field was learned.
    pub fn learn(&mut self, differences: &[Difference]) -> bool {
        self.samples += 1;
        let mut new = false;
        for d in differences {
            let count = self.fields.entry(d.field.as_noise()).or_insert(0);
            new |= *count == 0;
            *count += 1;
        }
        if new {
            self.compiled = Arc::new(self.compile());
        }
        new
    }

    fn compile(&self) -> Noise {
        let mut noise = Noise::default();
        let mut paths = Vec::new();
        for field in self.fields.keys() {
            match field {
                Field::Status => noise.status = true,
                Field::Body => noise.body = true,
                Field::Header(h) => {
                    if let Ok(name) = HeaderName::from_bytes(h.as_bytes()) {
                        noise.headers.push(name);
                    }
                }
                Field::Json(p) => paths.push(p.as_slice()),
            }
        }
        noise.json = Patterns::from_paths(paths);
        noise
    }

    /// What comparisons leave out now.
    pub fn current(&self) -> Arc<Noise> {
        Arc::clone(&self.compiled)
    }

    /// (field, times seen differing), most frequent first.
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut list: Vec<(String, u64)> =
            self.fields.iter().map(|(f, n)| (f.name(), *n)).collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::pattern::{OwnedSeg, Seg};

    fn diff(field: Field) -> Difference {
        Difference {
            field,
            legacy: Some("1".into()),
            shadow: Some("2".into()),
        }
    }

    #[test]
    fn array_positions_generalize_and_counts_accumulate() {
        let mut t = NoiseTable::default();
        let at = |i| {
            Field::Json(vec![
                OwnedSeg::Key("items".into()),
                OwnedSeg::Index(i),
                OwnedSeg::Key("etag".into()),
            ])
        };
        assert!(t.learn(&[diff(at(0)), diff(Field::Header("date".into()))]));
        assert!(!t.learn(&[diff(at(3))]));
        assert!(!t.learn(&[]));
        assert_eq!(t.samples(), 3);
        assert_eq!(
            t.fields(),
            vec![
                ("/items/*/etag".to_string(), 2),
                ("header:date".to_string(), 1)
            ]
        );
        let n = t.current();
        assert!(n
            .json
            .selects(&[Seg::Key("items"), Seg::Index(7), Seg::Key("etag")]));
        assert_eq!(n.headers, vec![HeaderName::from_static("date")]);
        assert!(!n.status && !n.body);
    }
}

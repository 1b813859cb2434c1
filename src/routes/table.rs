//! The compiled matcher: which route a request belongs to, by the contract's precedence.
//!
//! First an exact `path`, then the longest `path_prefix`, then `path_regex` in order
//! (files by name, then position). Among routes with the same path, more conditions
//! (host, methods, each header) are tried first; a route matches only when all its
//! conditions hold, otherwise the next candidate is tried.
//!
//! Prefixes match whole path segments, as Gateway API's `PathPrefix` and Kubernetes
//! Ingress's `Prefix` do: `/api/orders` matches `/api/orders` and `/api/orders/7`, not
//! `/api/orders-old`. Exact and prefix lookups are hash lookups, one per candidate
//! prefix of the request path, so the cost does not grow with the number of routes.

use std::collections::HashMap;

use http::HeaderName;
use regex::{Regex, RegexSet, RegexSetBuilder};

use super::def::{PathMatch, RouteDef};
use super::request::RequestView;

/// Compiled size allowed for the combined regex automaton; beyond it, regexes are tried
/// one by one.
const REGEX_SET_SIZE_LIMIT: usize = 64 << 20;

#[derive(Debug)]
struct Conditions {
    host: Option<Box<str>>,
    methods: Option<Box<[Box<str>]>>,
    headers: Box<[(HeaderName, Box<str>)]>,
}

impl Conditions {
    fn of(def: &RouteDef) -> Self {
        Conditions {
            host: def.host.as_deref().map(Into::into),
            methods: def
                .methods
                .as_ref()
                .map(|m| m.iter().map(|s| s.as_str().into()).collect()),
            headers: def
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.as_str().into()))
                .collect(),
        }
    }

    fn hold(&self, req: &RequestView) -> bool {
        if let Some(host) = &self.host {
            match req.host {
                Some(h) if h.eq_ignore_ascii_case(host) => {}
                _ => return false,
            }
        }
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| &**m == req.method) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, value)| req.headers.all(name).any(|v| v == value.as_bytes()))
    }
}

#[derive(Debug, Default)]
pub struct Matcher {
    // The keys are the configured paths: a request's path only chooses where to look, so
    // a fast hash is safe here (nothing a client sends is inserted).
    exact: HashMap<Box<str>, Vec<u32>, foldhash::fast::RandomState>,
    prefix: HashMap<Box<str>, Vec<u32>, foldhash::fast::RandomState>,
    /// Each distinct pattern (in file order) and the routes that use it.
    regex: Vec<(String, Vec<u32>)>,
    /// One by one, only when the set is too large to compile as one automaton.
    regex_each: Vec<Regex>,
    /// All regexes in one automaton, so a request is tested against every pattern in one
    /// pass; `None` when there are none or the set is too large to compile.
    regex_set: Option<RegexSet>,
    conditions: Vec<Conditions>,
    /// Longest configured prefix: request paths are only cut at or below it.
    longest_prefix: usize,
}

impl Matcher {
    /// Compiles validated routes; a route's index here is its index in `defs`.
    pub fn new<D: std::ops::Deref<Target = RouteDef>>(defs: &[D]) -> Result<Matcher, regex::Error> {
        let mut m = Matcher::default();
        let mut regex_slot: HashMap<&str, usize> = HashMap::new();
        for (i, def) in defs.iter().enumerate() {
            let i = i as u32;
            m.conditions.push(Conditions::of(def));
            match &def.path {
                PathMatch::Exact(p) => m.exact.entry(p.as_str().into()).or_default().push(i),
                PathMatch::Prefix(p) => {
                    m.longest_prefix = m.longest_prefix.max(p.len());
                    m.prefix.entry(p.as_str().into()).or_default().push(i);
                }
                PathMatch::Regex(r) => match regex_slot.get(r.as_str()) {
                    Some(&slot) => m.regex[slot].1.push(i),
                    None => {
                        regex_slot.insert(r, m.regex.len());
                        m.regex.push((r.clone(), vec![i]));
                    }
                },
            }
        }
        // Within one path, more conditions first; equal counts keep file order.
        let by_conditions = |list: &mut Vec<u32>| {
            list.sort_by_key(|&i| std::cmp::Reverse(defs[i as usize].condition_count()));
        };
        m.exact.values_mut().for_each(by_conditions);
        m.prefix.values_mut().for_each(by_conditions);
        m.regex.iter_mut().for_each(|(_, l)| by_conditions(l));
        if !m.regex.is_empty() {
            let set = RegexSetBuilder::new(m.regex.iter().map(|(r, _)| r.as_str()))
                .size_limit(REGEX_SET_SIZE_LIMIT)
                .build();
            match set {
                Ok(set) => m.regex_set = Some(set),
                Err(regex::Error::CompiledTooBig(_)) => {
                    m.regex_each = m
                        .regex
                        .iter()
                        .map(|(r, _)| Regex::new(r))
                        .collect::<Result<_, _>>()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(m)
    }

    fn first_holding(&self, list: &[u32], req: &RequestView) -> Option<usize> {
        list.iter()
            .map(|&i| i as usize)
            .find(|&i| self.conditions[i].hold(req))
    }

    /// The index of the route this request belongs to, or `None` for `_default`.
    pub fn find(&self, req: &RequestView) -> Option<usize> {
        let path = req.path;
        if let Some(found) = self
            .exact
            .get(path)
            .and_then(|l| self.first_holding(l, req))
        {
            return Some(found);
        }
        if !self.prefix.is_empty() {
            if let Some(found) = self.find_prefix(path, req) {
                return Some(found);
            }
        }
        if self.regex.is_empty() {
            return None;
        }
        match &self.regex_set {
            // Set matches come back in pattern order, which is file order.
            Some(set) => set
                .matches(path)
                .iter()
                .find_map(|i| self.first_holding(&self.regex[i].1, req)),
            None => self
                .regex_each
                .iter()
                .zip(&self.regex)
                .filter(|(re, _)| re.is_match(path))
                .find_map(|(_, (_, list))| self.first_holding(list, req)),
        }
    }

    /// Candidate prefixes of `/a/b/c`, longest first: `/a/b/c`, `/a/b/`, `/a/b`, `/a/`,
    /// `/a`, `/`. A prefix ending in '/' matches below it; one without matches itself and
    /// below it.
    fn find_prefix(&self, path: &str, req: &RequestView) -> Option<usize> {
        let bytes = path.as_bytes();
        let lookup = |candidate: &str| {
            self.prefix
                .get(candidate)
                .and_then(|l| self.first_holding(l, req))
        };
        if path.len() <= self.longest_prefix {
            if let Some(found) = lookup(path) {
                return Some(found);
            }
        }
        let mut end = bytes.len();
        while let Some(slash) = bytes[..end].iter().rposition(|&b| b == b'/') {
            // `path[..=slash]` (with its slash) is the whole path when the path ends in
            // '/', which was looked up already.
            if slash + 1 < bytes.len() && slash < self.longest_prefix {
                if let Some(found) = lookup(&path[..=slash]) {
                    return Some(found);
                }
            }
            if slash > 0 && slash <= self.longest_prefix {
                if let Some(found) = lookup(&path[..slash]) {
                    return Some(found);
                }
            }
            end = slash;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::def::Sticky;
    use http::{HeaderMap, Method, Uri};
    use std::path::PathBuf;

    fn regex_route(name: &str, re: &str, methods: Option<&[&str]>) -> RouteDef {
        RouteDef {
            name: name.into(),
            file: PathBuf::from("r.toml"),
            line: 1,
            column: 1,
            path: PathMatch::Regex(re.into()),
            host: None,
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            headers: Vec::new(),
            legacy: "m".into(),
            target: None,
            percent_bp: 0,
            sticky: Sticky::None,
            fallback: true,
            fallback_methods: Vec::new(),
            salt: name.into(),
            shadow: None,
            rate_limit: None,
            guard: None,
            cohorts: Vec::new(),
            ramp: None,
        }
    }

    /// The combined automaton and the one-by-one fallback give the same answers.
    #[test]
    fn regex_set_and_linear_scan_agree() {
        let defs = [
            regex_route("a", "^/v[0-9]+/orders", Some(&["POST"])),
            regex_route("b", "^/v1/", None),
            regex_route("c", "orders$", None),
            regex_route("a-get", "^/v[0-9]+/orders", Some(&["GET"])),
        ];
        let refs: Vec<&RouteDef> = defs.iter().collect();
        let with_set = Matcher::new(&refs).expect("compiles");
        assert!(with_set.regex_set.is_some());
        let mut linear = Matcher::new(&refs).expect("compiles");
        linear.regex_set = None;
        linear.regex_each = linear
            .regex
            .iter()
            .map(|(r, _)| Regex::new(r).expect("regex"))
            .collect();
        let headers = HeaderMap::new();
        for (method, path, want) in [
            (Method::POST, "/v2/orders", Some(0)),
            (Method::GET, "/v2/orders", Some(3)),
            (Method::GET, "/v1/orders", Some(3)),
            (Method::GET, "/v1/users", Some(1)),
            (Method::GET, "/x/orders", Some(2)),
            (Method::GET, "/nothing", None),
        ] {
            let uri: Uri = path.parse().expect("uri");
            let req = RequestView::new(&method, &uri, &headers, None);
            assert_eq!(with_set.find(&req), want, "{method} {path}");
            assert_eq!(linear.find(&req), want, "{method} {path} (linear)");
        }
    }
}

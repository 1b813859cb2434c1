//! A route's shadow settings as the data path uses them, compiled once per snapshot, and
//! the sampling decision: `xxh3_64("<salt>/shadow" ‖ 0x00 ‖ key) mod 10000 < percent × 100`
//! with the route's sticky key, so one user is consistently mirrored or not.

use http::{HeaderName, Method};

use super::pattern::Patterns;
use super::Rules;
use crate::routes::def::ShadowDef;
use crate::routes::{split, sticky_bucket, RequestView, Salt, Sticky};

#[derive(Debug)]
pub struct ShadowPlan {
    pub salt: Salt,
    pub sticky: Sticky,
    pub percent_bp: u16,
    /// Index of the shadow upstream.
    pub upstream: usize,
    pub methods: Vec<Method>,
    pub compare: bool,
    pub noise: bool,
    pub rules: Rules,
}

/// Methods that a second legacy call (for noise) may repeat.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl ShadowPlan {
    pub fn new(
        def: &ShadowDef,
        route_salt: &str,
        sticky: &Sticky,
        upstream: usize,
        max_body: usize,
    ) -> ShadowPlan {
        let mut ignore_headers = Vec::new();
        let mut pointers = Vec::new();
        for entry in &def.ignore {
            match entry.strip_prefix("header:") {
                Some(name) => {
                    if let Ok(h) = HeaderName::from_bytes(name.as_bytes()) {
                        ignore_headers.push(h);
                    }
                }
                None => pointers.push(entry.as_str()),
            }
        }
        ShadowPlan {
            salt: Salt::new(&format!("{route_salt}/shadow")),
            sticky: sticky.clone(),
            percent_bp: def.percent_bp,
            upstream,
            methods: def
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            compare: def.compare,
            noise: def.noise,
            rules: Rules {
                compare_headers: def.compare_headers.clone(),
                ignore_headers,
                ignore: Patterns::parse(pointers),
                max_body,
                descriptors: def.descriptors.clone(),
                message: None,
            },
        }
    }

    /// Whether a legacy-served request is mirrored. Pure; upgrades are excluded by the
    /// caller, which knows the connection.
    pub fn samples(&self, req: &RequestView) -> bool {
        if !self.methods.iter().any(|m| m.as_str() == req.method) {
            return false;
        }
        if self.percent_bp >= split::BUCKETS {
            return true;
        }
        if self.percent_bp == 0 {
            return false;
        }
        let (bucket, _) = sticky_bucket(&self.salt, &self.sticky, req);
        split::in_target(bucket, self.percent_bp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Uri};

    fn plan(percent_bp: u16, methods: &[&str]) -> ShadowPlan {
        let def = ShadowDef {
            percent_bp,
            upstream: "orders".into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            compare: true,
            compare_headers: vec![http::header::CONTENT_TYPE],
            ignore: vec!["/meta/generated_at".into(), "header:date".into()],
            noise: true,
            descriptors: None,
        };
        ShadowPlan::new(
            &def,
            "orders",
            &Sticky::Header(HeaderName::from_static("x-user-id")),
            1,
            1024,
        )
    }

    #[test]
    fn sampling_follows_methods_and_the_shadow_hash() {
        let uri = Uri::from_static("/api/orders/1");
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("user-1"));
        let get = RequestView::new(&Method::GET, &uri, &headers, None);
        let post = RequestView::new(&Method::POST, &uri, &headers, None);
        assert!(plan(10_000, &["GET"]).samples(&get));
        assert!(!plan(10_000, &["GET"]).samples(&post));
        assert!(plan(10_000, &["GET", "POST"]).samples(&post));
        assert!(!plan(0, &["GET"]).samples(&get));
        // "orders/shadow" puts user-1 in bucket 7377 (the split's reference vectors).
        assert!(!plan(7377, &["GET"]).samples(&get));
        assert!(plan(7378, &["GET"]).samples(&get));
        let p = plan(5000, &["GET"]);
        assert_eq!(
            p.rules.ignore_headers,
            vec![HeaderName::from_static("date")]
        );
        assert!(p.rules.ignore.selects(&[
            crate::compare::pattern::Seg::Key("meta"),
            crate::compare::pattern::Seg::Key("generated_at")
        ]));
    }
}

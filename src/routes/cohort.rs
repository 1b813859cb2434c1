//! Forced cohorts (`[[route.cohort]]`): requests carrying a header or cookie value, or
//! coming from an address range, always go to one side whatever the percent — testers to
//! the target at 0 %, a partner who must stay on the monolith at 100 %. Only a rollback
//! overrides them (everyone to legacy). Their traffic is counted apart, so the guard and
//! a ramp's gates judge the split users alone.

use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::spec::{Text, TextList};
use super::{Backend, RequestView};
use crate::diag::SourceFile;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortSpec {
    pub side: Text,
    pub header: Option<Text>,
    pub cookie: Option<Text>,
    pub values: Option<TextList>,
    pub cidr: Option<TextList>,
}

/// The keys of one `[[route.cohort]]`, for typo reports.
pub const COHORT_KEYS: &[&str] = &["side", "header", "cookie", "values", "cidr"];

/// Who is in a cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A request with this header, one of whose lines is exactly one of the values.
    Header(HeaderName, Vec<String>),
    /// A request whose cookie of this name is exactly one of the values.
    Cookie(String, Vec<String>),
    /// A request from a client address in one of the ranges.
    Cidr(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortDef {
    pub side: Backend,
    pub member: Member,
}

impl CohortDef {
    /// "header x-banyan-cohort in [beta-testers] → target", for explain and check.
    pub fn describe(&self) -> String {
        let who = match &self.member {
            Member::Header(n, v) => format!("header {n} in [{}]", v.join(", ")),
            Member::Cookie(n, v) => format!("cookie {n} in [{}]", v.join(", ")),
            Member::Cidr(nets) => format!(
                "client in {}",
                nets.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!("{who} → {}", self.side.as_str())
    }

    pub fn admits(&self, req: &RequestView) -> bool {
        match &self.member {
            Member::Header(name, values) => req
                .headers
                .all(name)
                .any(|h| values.iter().any(|v| v.as_bytes() == h)),
            Member::Cookie(name, values) => req
                .headers
                .cookie(name)
                .is_some_and(|c| values.iter().any(|v| v.as_bytes() == c)),
            Member::Cidr(nets) => req
                .client_ip
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        }
    }
}

/// The first cohort (in file order) `req` belongs to: its index and side.
pub fn forced(cohorts: &[CohortDef], req: &RequestView) -> Option<(usize, Backend)> {
    cohorts
        .iter()
        .enumerate()
        .find(|(_, c)| c.admits(req))
        .map(|(i, c)| (i, c.side))
}

/// Validates a route's cohorts; `has_target`: whether a target side exists to force.
pub(super) fn validate_cohorts(
    src: &mut SourceFile,
    specs: &[Spanned<CohortSpec>],
    has_target: bool,
) -> Vec<CohortDef> {
    specs
        .iter()
        .filter_map(|c| validate_cohort(src, c, has_target))
        .collect()
}

fn validate_cohort(
    src: &mut SourceFile,
    spec: &Spanned<CohortSpec>,
    has_target: bool,
) -> Option<CohortDef> {
    let c = spec.get_ref();
    let side = match c.side.get_ref().as_str() {
        "target" if !has_target => {
            src.error(
                Some(c.side.span()),
                "cohort.side = \"target\" but the route has no `target`",
            );
            return None;
        }
        "target" => Backend::Target,
        "legacy" => Backend::Legacy,
        other => {
            src.error(
                Some(c.side.span()),
                format!("cohort.side `{other}`: expected \"target\" or \"legacy\""),
            );
            return None;
        }
    };
    let given = [c.header.is_some(), c.cookie.is_some(), c.cidr.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        src.error(
            Some(spec.span()),
            "[[route.cohort]] needs exactly one of `header`, `cookie` or `cidr`",
        );
        return None;
    }
    let values = |src: &mut SourceFile, what: &str| -> Option<Vec<String>> {
        match &c.values {
            Some(v) if !v.get_ref().is_empty() => {
                Some(v.get_ref().iter().map(|t| t.get_ref().clone()).collect())
            }
            _ => {
                src.error(
                    Some(spec.span()),
                    format!("[[route.cohort]] with `{what}` needs a non-empty `values` list"),
                );
                None
            }
        }
    };
    let member = if let Some(h) = &c.header {
        let Ok(name) = HeaderName::from_bytes(h.get_ref().as_bytes()) else {
            src.error(
                Some(h.span()),
                format!("cohort.header `{}` is not a header name", h.get_ref()),
            );
            return None;
        };
        Member::Header(name, values(src, "header")?)
    } else if let Some(k) = &c.cookie {
        let name = k.get_ref();
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b"=;,\"".contains(&b)) {
            src.error(
                Some(k.span()),
                format!("cohort.cookie `{name}` is not a cookie name"),
            );
            return None;
        }
        Member::Cookie(name.clone(), values(src, "cookie")?)
    } else {
        if c.values.is_some() {
            src.error(
                Some(spec.span()),
                "[[route.cohort]]: `values` goes with `header` or `cookie`, not `cidr`",
            );
            return None;
        }
        let list = c.cidr.as_ref()?;
        let mut nets = Vec::new();
        for t in list.get_ref() {
            match t.get_ref().parse::<IpNet>() {
                Ok(n) => nets.push(n.trunc()),
                // A single address is a range of one.
                Err(_) => match t.get_ref().parse::<std::net::IpAddr>() {
                    Ok(ip) => nets.push(IpNet::from(ip)),
                    Err(_) => {
                        src.error(
                            Some(t.span()),
                            format!(
                                "cohort.cidr `{}`: expected an address range like \"10.1.0.0/16\"",
                                t.get_ref()
                            ),
                        );
                        return None;
                    }
                },
            }
        }
        if nets.is_empty() {
            src.error(Some(list.span()), "cohort.cidr is an empty list");
            return None;
        }
        Member::Cidr(nets)
    };
    Some(CohortDef { side, member })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn view<'a>(headers: &'a HeaderMap, ip: &str) -> RequestView<'a> {
        RequestView {
            method: "GET",
            path: "/",
            host: None,
            headers: crate::routes::request::Headers::Map(headers),
            client_ip: ip.parse().ok(),
        }
    }

    fn cohorts() -> Vec<CohortDef> {
        vec![
            CohortDef {
                side: Backend::Legacy,
                member: Member::Cidr(vec!["10.1.0.0/16".parse().expect("net")]),
            },
            CohortDef {
                side: Backend::Target,
                member: Member::Header(
                    HeaderName::from_static("x-banyan-cohort"),
                    vec!["beta-testers".into(), "staff".into()],
                ),
            },
            CohortDef {
                side: Backend::Target,
                member: Member::Cookie("cohort".into(), vec!["beta".into()]),
            },
        ]
    }

    #[test]
    fn the_first_cohort_that_admits_a_request_decides() {
        let c = cohorts();
        let mut h = HeaderMap::new();
        assert_eq!(forced(&c, &view(&h, "192.0.2.1")), None);
        h.insert("x-banyan-cohort", HeaderValue::from_static("staff"));
        assert_eq!(
            forced(&c, &view(&h, "192.0.2.1")),
            Some((1, Backend::Target))
        );
        // The address range is listed first.
        assert_eq!(
            forced(&c, &view(&h, "10.1.2.3")),
            Some((0, Backend::Legacy))
        );
        assert_eq!(
            forced(&c, &view(&h, "10.2.0.1")),
            Some((1, Backend::Target))
        );
    }

    #[test]
    fn values_are_matched_whole() {
        let c = cohorts();
        let mut h = HeaderMap::new();
        h.insert(
            "x-banyan-cohort",
            HeaderValue::from_static("beta-testers-2"),
        );
        assert_eq!(forced(&c, &view(&h, "192.0.2.1")), None);
        h.insert("x-banyan-cohort", HeaderValue::from_static("Beta-Testers"));
        assert_eq!(forced(&c, &view(&h, "192.0.2.1")), None);
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; cohort=beta; b=2"));
        assert_eq!(
            forced(&c, &view(&h, "192.0.2.1")),
            Some((2, Backend::Target))
        );
        h.insert("cookie", HeaderValue::from_static("xcohort=beta"));
        assert_eq!(forced(&c, &view(&h, "192.0.2.1")), None);
        // Without a known client address, no range admits it.
        assert_eq!(forced(&c, &view(&HeaderMap::new(), "")), None);
    }

    #[test]
    fn descriptions_name_the_rule_and_side() {
        let c = cohorts();
        assert_eq!(c[0].describe(), "client in 10.1.0.0/16 → legacy");
        assert_eq!(
            c[1].describe(),
            "header x-banyan-cohort in [beta-testers, staff] → target"
        );
    }
}

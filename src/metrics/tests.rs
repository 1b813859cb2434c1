//! The metric handles against the contract's series names.

use super::*;

#[test]
fn status_classes() {
    assert_eq!(STATUS_CLASSES[status_class_index(101)], "1xx");
    assert_eq!(STATUS_CLASSES[status_class_index(200)], "2xx");
    assert_eq!(STATUS_CLASSES[status_class_index(302)], "3xx");
    assert_eq!(STATUS_CLASSES[status_class_index(404)], "4xx");
    assert_eq!(STATUS_CLASSES[status_class_index(503)], "5xx");
    assert_eq!(STATUS_CLASSES[status_class_index(0)], "none");
    assert_eq!(STATUS_CLASSES[status_class_index(999)], "none");
}

#[test]
fn route_handles_feed_the_contract_series() {
    let m = Metrics::new().expect("registry");
    let r = m.route("orders");
    r.record(&m, Backend::Target, 200, 0.003);
    r.record(&m, Backend::Target, 502, 0.001);
    r.record(&m, Backend::Legacy, 200, 0.002);
    // Other handles for the same route continue the same series.
    m.route("orders").record(&m, Backend::Target, 200, 0.004);
    m.route_target_percent
        .with_label_values(&["orders"])
        .set(25.5);
    assert_eq!(r.totals(Backend::Target), (3, 1));
    let text = String::from_utf8(m.render()).expect("utf-8");
    assert!(
        text.contains(
            "banyan_requests_total{backend=\"target\",route=\"orders\",status_class=\"2xx\"} 2"
        ),
        "{text}"
    );
    assert!(text
        .contains("banyan_request_duration_seconds_count{backend=\"legacy\",route=\"orders\"} 1"));
    assert!(text.contains("banyan_route_target_percent{route=\"orders\"} 25.5"));
}

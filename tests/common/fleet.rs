//! A fleet of banyan replicas sharing one etcd prefix, for the fleet tests.

use serde_json::Value;

use super::etcd::Etcd;
use super::upstream::Upstream;
use super::{wait_until, Banyan};

pub struct Fleet {
    pub replicas: Vec<Banyan>,
    pub prefix: String,
    endpoint: String,
    state: String,
    route: String,
    _ups: Vec<Upstream>,
}

pub fn fleet(etcd: &Etcd, n: usize) -> Fleet {
    fleet_with(etcd, n, "")
}

/// `n` replicas r0, r1, … of one fleet; `state` is added to each one's `[state]`.
pub fn fleet_with(etcd: &Etcd, n: usize, state: &str) -> Fleet {
    fleet_of(
        etcd,
        n,
        state,
        Upstream::start("orders"),
        &super::orders_route(25.0),
    )
}

/// `n` replicas with `orders` as the target upstream and `route` as `orders.toml`.
pub fn fleet_of(etcd: &Etcd, n: usize, state: &str, orders: Upstream, route: &str) -> Fleet {
    let monolith = Upstream::start("monolith");
    let prefix = format!("/banyan/test-{}", super::free_port());
    let mut f = Fleet {
        replicas: Vec::new(),
        prefix,
        endpoint: etcd.endpoint(),
        state: state.to_string(),
        route: route.to_string(),
        _ups: vec![monolith, orders],
    };
    for _ in 0..n {
        let b = f.replica(f.replicas.len());
        f.replicas.push(b);
    }
    wait_until("every replica in the fleet", || {
        f.replicas.iter().all(|b| {
            fleet_view(b)["replicas"]
                .as_array()
                .is_some_and(|r| r.len() == n)
        })
    });
    f
}

impl Fleet {
    /// Replica `r{i}` of this fleet, started with an empty state folder.
    fn replica(&self, i: usize) -> Banyan {
        let tail = format!(
            "[state]\nstore = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{}\"\nreplica = \"r{i}\"\n{}\n",
            self.endpoint, self.prefix, self.state
        );
        let mut setup = super::Setup::new(
            vec![
                ("monolith", vec![self._ups[0].addr]),
                ("orders", vec![self._ups[1].addr]),
            ],
            "monolith",
        )
        .route_file("orders.toml", self.route.clone());
        setup.tail = &tail;
        setup.start()
    }

    /// One more replica joins (a new pod, a restart elsewhere): its index in `replicas`.
    pub fn join(&mut self) -> usize {
        let b = self.replica(self.replicas.len());
        self.replicas.push(b);
        self.replicas.len() - 1
    }

    /// The replica elected to judge the fleet's aggregates, once every replica agrees on
    /// one: its index in `replicas` (replica `r{i}` is `replicas[i]`).
    pub fn leader(&self) -> usize {
        let mut leader = String::new();
        wait_until("a replica elected", || {
            let seen: Vec<Value> = self
                .replicas
                .iter()
                .map(|b| fleet_view(b)["leader"].clone())
                .collect();
            leader = seen[0].as_str().unwrap_or_default().to_string();
            !leader.is_empty() && seen.iter().all(|l| *l == leader.as_str())
        });
        leader
            .strip_prefix('r')
            .and_then(|i| i.parse().ok())
            .expect("replicas are named r0, r1, …")
    }
}

pub fn fleet_view(b: &Banyan) -> Value {
    let (code, body) = b.admin_get("/api/v1/fleet");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("fleet json")
}

/// A user the declared 25 % sends to the target.
pub fn target_user() -> String {
    (0..10_000)
        .map(|i| format!("t-{i}"))
        .find(|u| banyan::routes::split::bucket("orders", u.as_bytes()) < 2500)
        .expect("a target-bound user")
}

pub fn served_by(b: &Banyan, user: &str) -> String {
    let (_, body) = super::try_http_request_with_headers(
        b.proxy,
        "GET",
        "/api/orders/1",
        &[("x-user-id", user)],
    )
    .expect("an answer");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["upstream"].as_str().unwrap_or("").to_string()
}

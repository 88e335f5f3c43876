//! Which node owns a request: rendezvous (highest-random-weight) hashing of
//! the shard key over the nodes that host the request's role.
//!
//! Every node computes the same answer from the same config, so a request can
//! enter the cluster anywhere. Rendezvous hashing moves only the keys of a
//! node that joins or leaves, which the later resharding work relies on.

use mlsd_transport::Role;
use sha2::{Digest, Sha256};

use crate::config::NodeConfig;

fn score(role: Role, node: &str, key: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"mlsd-rendezvous-v1\0");
    h.update(role.name().as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    h.update([0]);
    h.update(key);
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// The owner of `key` for `role` among `nodes`, or `None` when no node hosts
/// the role (which a validated config rules out).
pub fn owner<'a>(nodes: &'a [NodeConfig], role: Role, key: &[u8]) -> Option<&'a NodeConfig> {
    nodes.iter().filter(|n| n.hosts(role)).max_by(|a, b| {
        score(role, &a.name, key).cmp(&score(role, &b.name, key)).then_with(|| b.name.cmp(&a.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, roles: &[Role]) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            listen: "127.0.0.1:1".parse().unwrap(),
            roles: roles.to_vec(),
            data_dir: "/tmp".into(),
        }
    }

    #[test]
    fn owner_hosts_the_role_and_load_spreads() {
        let nodes = vec![n("a", &[Role::Ods]), n("b", &[Role::Ods]), n("c", &[Role::As])];
        let mut counts = [0usize; 2];
        for i in 0..1000u32 {
            let o = owner(&nodes, Role::Ods, &i.to_be_bytes()).unwrap();
            counts[(o.name == "b") as usize] += 1;
            assert_eq!(owner(&nodes, Role::As, &i.to_be_bytes()).unwrap().name, "c");
        }
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let three = vec![n("a", &[Role::Ids]), n("b", &[Role::Ids]), n("c", &[Role::Ids])];
        let two = vec![three[0].clone(), three[1].clone()];
        for i in 0..500u32 {
            let k = i.to_be_bytes();
            let before = &owner(&three, Role::Ids, &k).unwrap().name;
            if before != "c" {
                assert_eq!(&owner(&two, Role::Ids, &k).unwrap().name, before);
            }
        }
    }
}

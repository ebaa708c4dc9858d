//! The manifests directory cache against loading from scratch: after any
//! sequence of file writes, rewrites and removals (objects duplicated
//! across files, slices moving between Services, the Node coming and
//! going), the cache's merged view equals a fresh load of the directory,
//! and the changes it reports are exactly what comparing the whole views
//! finds.

#![allow(clippy::unwrap_used)] // test code

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rvs_proxy::ClusterState;
use rvs_proxy::source::manifests::{DirCache, load_dir};

/// One object a file may hold: a Service `s{n}` (with a port variant), its
/// slice `e{n}` pointing at Service `s{owner}`, or this node.
#[derive(Clone, Debug)]
enum Obj {
    Service { n: u8, port: u16 },
    Slice { n: u8, owner: u8, ip: u8 },
    Node { zone: u8 },
}

fn text(objs: &[Obj]) -> String {
    let items: Vec<String> = objs
        .iter()
        .map(|o| match o {
            Obj::Service { n, port } => format!(
                r#"{{"kind":"Service","metadata":{{"name":"s{n}","namespace":"p"}},"spec":{{"clusterIP":"10.96.0.{n}","ports":[{{"name":"http","port":{port}}}]}}}}"#
            ),
            Obj::Slice { n, owner, ip } => format!(
                r#"{{"kind":"EndpointSlice","metadata":{{"name":"e{n}","namespace":"p","labels":{{"kubernetes.io/service-name":"s{owner}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080,"protocol":"TCP"}}],"endpoints":[{{"addresses":["10.244.0.{ip}"]}}]}}"#
            ),
            Obj::Node { zone } => format!(
                r#"{{"kind":"Node","metadata":{{"name":"node-a","labels":{{"topology.kubernetes.io/zone":"z{zone}"}}}}}}"#
            ),
        })
        .collect();
    format!(r#"{{"kind":"List","items":[{}]}}"#, items.join(","))
}

fn obj() -> impl Strategy<Value = Obj> {
    prop_oneof![
        (0u8..5, prop_oneof![Just(80u16), Just(81)]).prop_map(|(n, port)| Obj::Service { n, port }),
        (0u8..5, 0u8..5, 1u8..3).prop_map(|(n, owner, ip)| Obj::Slice { n, owner, ip }),
        (0u8..2).prop_map(|zone| Obj::Node { zone }),
    ]
}

/// A step: file `f` (of three) gets `objs`, or is removed when `None`.
fn step() -> impl Strategy<Value = (usize, Option<Vec<Obj>>)> {
    (
        0usize..3,
        proptest::option::weighted(0.8, proptest::collection::vec(obj(), 0..5)),
    )
}

/// The oracle: every file's objects in name order, built into one view
/// (a later definition of an object replaces an earlier one).
fn fresh(dir: &Path) -> ClusterState {
    let (m, errors) = load_dir(dir).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    ClusterState::build(&m.services, &m.slices, &m.nodes, "node-a", None).0
}

fn write(path: &PathBuf, objs: &[Obj]) {
    // Through a rename, as controllers write: the cache notices by size
    // and modification time, and a rename always makes a new file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text(objs)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn the_cache_matches_a_fresh_load(steps in proptest::collection::vec(step(), 1..14)) {
        let temp = rvs_testrig::TempDir::new("dircache").unwrap();
        let dir = temp.path();
        let mut cache = DirCache::new("node-a", None);
        let mut before = cache.load(dir).unwrap().state.clone();
        for (f, objs) in steps {
            let path = dir.join(format!("f{f}.json"));
            match objs {
                Some(objs) => write(&path, &objs),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let loaded = cache.load(dir).unwrap();
            let state = loaded.state.clone();
            let changes = loaded.changes;
            prop_assert_eq!(&state, &fresh(dir));
            prop_assert_eq!(changes, state.changes_since(&before));
            before = state;
        }
    }
}

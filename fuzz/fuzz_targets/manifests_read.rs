//! Any text as a manifest file, as the manifests source reads it: it must
//! not panic, whatever the file's extension; and whenever the JSON `List`
//! reducer (which builds the cluster view object by object while parsing)
//! accepts a text, the careful path (YAML/JSON documents, then the
//! validated view) must give the same view and the same errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_proxy::ClusterState;
use rvs_proxy::source::manifests::{Manifests, parse_into, read_text, reduce_json_list};

const NODE: &str = "node-a";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = read_text(text, "f.yaml", NODE, None);
    let _ = read_text(text, "f.json", NODE, Some("other-proxy"));
    if let Some((fast, fast_errors)) = reduce_json_list(text, NODE, None) {
        let mut objects = Manifests::default();
        let mut doc_errors = Vec::new();
        parse_into(text, "f.yaml", &mut objects, &mut doc_errors);
        if !doc_errors.is_empty() {
            // YAML and JSON disagree on what a document is (duplicate
            // keys, say): the reducer read a List the careful path refuses.
            return;
        }
        let (careful, object_errors) =
            ClusterState::build(&objects.services, &objects.slices, &objects.nodes, NODE, None);
        assert_eq!(fast, careful, "the reducer and the careful path disagree");
        let careful_errors: Vec<String> = object_errors.iter().map(ToString::to_string).collect();
        assert_eq!(fast_errors, careful_errors);
    }
});

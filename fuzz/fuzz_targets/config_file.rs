//! Any text as a `--config` file (a `KubeProxyConfiguration`): the parser
//! must not panic, and what it accepts must survive being written back
//! (`--write-config-to`) and read again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_proxy::config_file::{parse, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = parse(text, "fuzz.yaml") {
        let written = render(&config);
        let again = parse(&written, "written.yaml").expect("a written config reads back");
        assert_eq!(again, config, "written:\n{written}");
    }
});

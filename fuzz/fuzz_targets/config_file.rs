//! Any text as a `--config` file (a `KubeProxyConfiguration`): the parser
//! must not panic, and what it accepts must survive being written back
//! (`--write-config-to`) and read again unchanged, but for the fields it
//! did not know: those are warned about once and not written back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_proxy::config_file::{parse, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut config) = parse(text, "fuzz.yaml") {
        let written = render(&config);
        config.ignored.clear();
        let again = parse(&written, "written.yaml").expect("a written config reads back");
        assert_eq!(again, config, "written:\n{written}");
    }
});

//! Proves the host-kernel rig: namespaces are isolated from the host and
//! from each other, carry traffic between them, run Rust code entered into
//! them, and vanish when dropped.

use rvs_testrig::Netns;

fn exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn ipset_and_iptables_state_stays_inside_the_namespace() {
    let Some(ns) = Netns::or_skip("ipset_and_iptables_state_stays_inside_the_namespace") else {
        return;
    };
    ns.run("ipset", &["create", "RVS-RIG-TEST", "hash:ip,port"])
        .unwrap();
    ns.run("ipset", &["add", "RVS-RIG-TEST", "10.96.0.1,tcp:443"])
        .unwrap();
    let listed = ns.sh("ipset list RVS-RIG-TEST").unwrap();
    assert!(listed.contains("10.96.0.1,tcp:443"), "{listed}");
    let host = std::process::Command::new("ipset")
        .args(["list", "RVS-RIG-TEST"])
        .output()
        .unwrap();
    assert!(
        !host.status.success(),
        "the set leaked into the host namespace"
    );

    for iptables in ["iptables-legacy", "iptables-nft"] {
        ns.run(iptables, &["-t", "nat", "-N", "RVS-RIG-TEST"])
            .unwrap();
        let saved = ns.sh(&format!("{iptables}-save -t nat")).unwrap();
        assert!(saved.contains(":RVS-RIG-TEST"), "{iptables}: {saved}");
    }
}

#[test]
fn namespaces_carry_traffic_and_are_removed_on_drop() {
    let Some(a) = Netns::or_skip("namespaces_carry_traffic_and_are_removed_on_drop") else {
        return;
    };
    let b = Netns::new().unwrap();
    a.link(&b, "192.0.2.1/24", "192.0.2.2/24").unwrap();
    // An HTTP server in b (killed with the namespace), a bounded client in a.
    let root = rvs_testrig::TempDir::new("netns-test").unwrap();
    std::fs::write(root.join("index.html"), "pong\n").unwrap();
    b.command("busybox")
        .args(["httpd", "-p", "192.0.2.2:7777", "-h"])
        .arg(root.path())
        .status()
        .unwrap();
    let reply = a
        .sh("for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 busybox nc -w 2 192.0.2.2 7777 | tail -n 1 | grep . && exit 0; sleep 0.2; done; exit 1")
        .unwrap();
    assert_eq!(reply.trim(), "pong");

    let (a_name, b_name) = (a.name().to_owned(), b.name().to_owned());
    assert!(exists(&a_name) && exists(&b_name));
    drop(a);
    drop(b);
    assert!(!exists(&a_name) && !exists(&b_name));
}

#[test]
fn a_namespace_is_removed_even_when_the_test_panics() {
    let Some(probe) = Netns::or_skip("a_namespace_is_removed_even_when_the_test_panics") else {
        return;
    };
    drop(probe);
    let name = std::panic::catch_unwind(|| {
        let ns = Netns::new().unwrap();
        let name = ns.name().to_owned();
        assert!(exists(&name));
        std::panic::panic_any(name);
    })
    .unwrap_err();
    let name = name.downcast::<String>().unwrap();
    assert!(!exists(&name), "{name} survived the panic");
}

#[test]
fn code_entered_into_a_namespace_opens_its_sockets_there() {
    let Some(ns) = Netns::or_skip("code_entered_into_a_namespace_opens_its_sockets_there") else {
        return;
    };
    ns.run("ip", &["addr", "add", "192.0.2.77/32", "dev", "lo"])
        .unwrap();
    let bind = || std::net::TcpListener::bind("192.0.2.77:0").map(|_| ());
    assert!(
        ns.enter(bind).unwrap().is_ok(),
        "the address is the namespace's"
    );
    assert!(bind().is_err(), "and not the host's");
    // A panic inside comes out as the same panic.
    let panic = std::panic::catch_unwind(|| ns.enter(|| std::panic::panic_any(7_u32))).unwrap_err();
    assert_eq!(panic.downcast_ref::<u32>(), Some(&7));
}

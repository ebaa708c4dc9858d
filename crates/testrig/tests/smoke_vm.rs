//! Proves the VM rig: the guest boots Debian's kernel, reports exit codes
//! faithfully, has IPVS, and forwards real traffic from a client namespace
//! through a virtual address to two backends.

use std::time::Duration;

use rvs_testrig::{Vm, VmJob};

#[test]
fn exit_code_and_output_come_back_from_the_guest() {
    let Some(vm) = Vm::or_skip("exit_code_and_output_come_back_from_the_guest") else {
        return;
    };
    let out = vm
        .run(&VmJob::new(
            "echo hello from $(uname -r)\necho to-stderr >&2\nexit 3\n",
        ))
        .unwrap();
    assert_eq!(out.exit_code, 3, "console:\n{}", out.console);
    assert_eq!(
        out.output,
        format!("hello from {}\nto-stderr\n", vm.kernel_release())
    );
    assert!(!out.success());
    eprintln!("boot + run + poweroff took {:?}", out.elapsed);
}

#[test]
fn files_binaries_and_environment_reach_the_guest() {
    let Some(vm) = Vm::or_skip("files_binaries_and_environment_reach_the_guest") else {
        return;
    };
    // A dynamically linked host binary must run with its copied libraries.
    let job =
        VmJob::new("cat /etc/rvs-data.txt\necho \"$GREETING\"\nhostdash -c 'echo dash works'\n")
            .file("/etc/rvs-data.txt", "payload\n")
            .env("GREETING", "it's here")
            .binary("hostdash", "/bin/dash");
    let out = vm.run(&job).unwrap().assert_success();
    assert_eq!(out.output, "payload\nit's here\ndash works\n");
}

#[test]
fn a_script_that_hangs_times_out_instead_of_blocking_the_suite() {
    let Some(vm) = Vm::or_skip("a_script_that_hangs_times_out_instead_of_blocking_the_suite")
    else {
        return;
    };
    let job = VmJob::new("sleep 600\n").timeout(Duration::from_secs(20));
    match vm.run(&job) {
        Err(rvs_testrig::RigError::Timeout { seconds, console }) => {
            assert_eq!(seconds, 20);
            assert!(console.contains("@@RVS-BEGIN@@"), "{console}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// The seed's example, in the guest: `ipvsadm -A -t VIP:80 -s rr`, two
/// masqueraded real servers in their own namespaces, and a client in a
/// third namespace whose requests alternate between them.
#[test]
fn ipvs_round_robins_client_traffic_across_two_backends() {
    let Some(vm) = Vm::or_skip("ipvs_round_robins_client_traffic_across_two_backends") else {
        return;
    };
    let script = r#"
set -e
. /usr/lib/rvs/topo.sh
grep -q '^ip_vs ' /proc/modules
grep -q '^ip_vs_rr ' /proc/modules
topo_backends
topo_vip 10.96.0.10/32
ipvsadm -A -t 10.96.0.10:80 -s rr
ipvsadm -a -t 10.96.0.10:80 -r "$(topo_addr 2)":80 -m
ipvsadm -a -t 10.96.0.10:80 -r "$(topo_addr 3)":80 -m
for i in 1 2 3 4 5 6; do
    reply=$(topo_get client 10.96.0.10)
    echo "reply: $reply"
done
# The kernel folds per-CPU counters into the totals ipvsadm reads only when
# its rate estimator runs (every 2 s), so give it a tick.
sleep 3
ipvsadm -Ln --stats
"#;
    let out = vm.run(&VmJob::new(script)).unwrap().assert_success();
    let replies: Vec<&str> = out
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("reply: "))
        .collect();
    assert_eq!(replies.len(), 6, "{}", out.output);
    for pair in replies.windows(2) {
        assert_ne!(pair[0], pair[1], "rr must alternate: {replies:?}");
    }
    let ones = replies.iter().filter(|r| **r == "backend-one").count();
    let twos = replies.iter().filter(|r| **r == "backend-two").count();
    assert_eq!((ones, twos), (3, 3), "{replies:?}");
    // The service saw six connections (the Conns column of --stats).
    let stats = out
        .output
        .lines()
        .find(|l| l.starts_with("TCP  10.96.0.10:80"))
        .unwrap_or_else(|| panic!("no service line in:\n{}", out.output));
    assert_eq!(stats.split_whitespace().nth(2), Some("6"), "{stats}");
}

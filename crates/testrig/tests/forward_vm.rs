//! Proves the VM rig's one forward: with `VmJob::forward_to_host` the
//! guest reaches one host port on 127.0.0.1 through one address of qemu's
//! user-mode network, once per connection, and nothing else — the host's
//! other ports stay out of reach (`restrict=on`). A test can act on the
//! host while the job runs (`Vm::start`, `RunningVm::wait_for_line`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::SocketAddrV4;
use std::time::Duration;

use rvs_testrig::backend::Backend;
use rvs_testrig::vm::GUEST_NET_SETUP;
use rvs_testrig::{Vm, VmJob};

#[test]
fn guest_reaches_exactly_the_forwarded_host_port() {
    let Some(vm) = Vm::or_skip("guest_reaches_exactly_the_forwarded_host_port") else {
        return;
    };
    let open = Backend::tcp("127.0.0.1:0".parse().unwrap(), "forwarded").unwrap();
    let other = Backend::tcp("127.0.0.1:0".parse().unwrap(), "not-forwarded").unwrap();
    let guest: SocketAddrV4 = "10.0.2.100:443".parse().unwrap();
    let script = format!(
        "{GUEST_NET_SETUP}\
         echo ready\n\
         for i in 1 2 3; do echo who | nc -w 5 10.0.2.100 443; done\n\
         # qemu's host alias and the other port: both out of reach.\n\
         echo who | nc -w 3 10.0.2.2 {other} && echo LEAK-host-alias\n\
         echo who | nc -w 3 10.0.2.100 {other} && echo LEAK-other-port\n\
         echo done\n",
        other = other.addr().port()
    );
    let job = VmJob::new(script)
        .forward_to_host(guest, open.addr().port())
        .timeout(Duration::from_secs(240));
    let mut running = vm.start(&job).unwrap();
    running
        .wait_for_line("ready", Duration::from_secs(200))
        .unwrap();
    let out = running.wait().unwrap().assert_success();
    let answers: Vec<&str> = out.output.lines().filter(|l| *l == "forwarded").collect();
    assert_eq!(answers.len(), 3, "{}", out.output);
    assert!(!out.output.contains("LEAK"), "{}", out.output);
    assert!(!out.output.contains("not-forwarded"), "{}", out.output);
    assert_eq!(open.served(), 3);
    assert_eq!(other.served(), 0);
}

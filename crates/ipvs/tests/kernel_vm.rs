//! The IPVS generic netlink family, resolved by our own code inside the
//! real kernel of the test VM.
//!
//! The host test boots the VM and runs this very test binary inside it,
//! selecting the `in_vm_*` test (ignored on the host, where it cannot run).

use rvs_testrig::{Vm, VmJob};

#[test]
fn ipvs_family_resolves_in_the_real_kernel() {
    let Some(vm) = Vm::or_skip("ipvs_family_resolves_in_the_real_kernel") else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let job = VmJob::new(
        "self --exact in_vm_resolve_ipvs_family --ignored --nocapture --test-threads 1\n",
    )
    .binary("self", exe)
    .env("RVS_IN_VM", "1");
    let out = vm.run(&job).unwrap().assert_success();
    assert!(out.output.contains("IPVS family id "), "{}", out.output);
    assert!(out.output.contains("1 passed"), "{}", out.output);
}

#[test]
#[ignore = "runs inside the test VM, started by ipvs_family_resolves_in_the_real_kernel"]
fn in_vm_resolve_ipvs_family() {
    assert_eq!(
        std::env::var("RVS_IN_VM").as_deref(),
        Ok("1"),
        "run me in the VM"
    );
    let family = rvs_ipvs::resolve_ipvs_family().unwrap();
    assert_eq!(family.name, "IPVS");
    assert!(
        family.id >= 0x10,
        "dynamic genl ids start above GENL_ID_CTRL"
    );
    assert!(family.version >= 1);
    println!("IPVS family id {} version {}", family.id, family.version);
    // A family the kernel does not have is reported as missing, by name.
    match rvs_ipvs::resolve_family("RVS-NOSUCH") {
        Err(rvs_ipvs::GenlError::FamilyNotFound { name }) => assert_eq!(name, "RVS-NOSUCH"),
        other => panic!("expected FamilyNotFound, got {other:?}"),
    }
    // A name longer than the kernel allows is refused before asking.
    assert!(matches!(
        rvs_ipvs::resolve_family("A-NAME-TOO-LONG-FOR-GENL"),
        Err(rvs_ipvs::GenlError::InvalidName { .. })
    ));
}

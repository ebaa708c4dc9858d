//! One userspace dataplane per network namespace: a second
//! `Dataplane::start` under the same lock name fails and names the
//! running one, the lock is free again once that one stops, and other
//! lock names (or none) do not exclude each other.
//!
//! Every test uses its own lock name, never the default one, so that the
//! tests run side by side and beside real dataplanes on the host.
//! Separate network namespaces are covered by rvsd's tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::time::Duration;

use rvs_userspace::{DEFAULT_INSTANCE_LOCK, Dataplane, InstanceLock, Options, UserspaceError};

fn options(lock: Option<String>) -> Options {
    Options {
        workers: 1,
        instance_lock: lock,
        ..Options::default()
    }
}

fn lock_name(test: &str) -> String {
    format!("rvs-userspace-test-{test}-{}", std::process::id())
}

#[test]
fn a_second_dataplane_is_refused_until_the_first_stops() {
    let name = lock_name("second");
    let first = Dataplane::start(options(Some(name.clone()))).unwrap();

    let err = Dataplane::start(options(Some(name.clone()))).unwrap_err();
    let UserspaceError::AlreadyRunning { lock, holder } = &err else {
        panic!("expected AlreadyRunning, got {err:?}");
    };
    assert_eq!(lock, &name);
    let pid = i32::try_from(std::process::id()).unwrap();
    assert_eq!(holder.pid, Some(pid), "{err}");
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_string_lossy();
    let cmdline = holder.cmdline.as_deref().unwrap();
    assert!(cmdline.contains(&*exe_name), "{cmdline}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "another userspace dataplane is running in this network namespace (pid {pid}: "
        )),
        "{text}"
    );
    assert!(text.ends_with("); stop it first"), "{text}");

    // The lock alone says the same.
    assert!(matches!(
        InstanceLock::acquire(&name),
        Err(UserspaceError::AlreadyRunning { .. })
    ));

    first.shutdown(Duration::from_millis(100));
    let second = Dataplane::start(options(Some(name.clone()))).unwrap();
    // Dropping releases it as well as shutting down.
    drop(second);
    let lock = InstanceLock::acquire(&name).unwrap();
    assert_eq!(lock.name(), name);
}

#[test]
fn other_names_and_no_lock_do_not_exclude_each_other() {
    let a = Dataplane::start(options(Some(lock_name("a")))).unwrap();
    let b = Dataplane::start(options(Some(lock_name("b")))).unwrap();
    let unlocked = Dataplane::start(options(None)).unwrap();
    let unlocked_too = Dataplane::start(options(None)).unwrap();
    for d in [a, b, unlocked, unlocked_too] {
        d.shutdown(Duration::from_millis(100));
    }
}

#[test]
fn the_default_options_take_the_default_lock() {
    assert_eq!(
        Options::default().instance_lock.as_deref(),
        Some(DEFAULT_INSTANCE_LOCK)
    );
    assert_eq!(DEFAULT_INSTANCE_LOCK, "rvs-userspace-dataplane");
}

#[test]
fn an_unusable_lock_name_is_an_error_naming_it() {
    let long = "x".repeat(200);
    let err = InstanceLock::acquire(&long).unwrap_err();
    assert!(
        matches!(err, UserspaceError::InstanceLock { ref name, .. } if *name == long),
        "{err:?}"
    );
    assert!(err.to_string().contains(&long[..50]), "{err}");
}

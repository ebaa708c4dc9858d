//! What the userspace dataplane's tests share (and rvs-ebpf's rebalancing
//! bench, which includes `rebalance` by path).

#![allow(dead_code, unreachable_pub)] // test code

pub mod rebalance;

//! Virtual addresses on `kube-ipvs0`: this module owns the device and the
//! addresses on it.
//!
//! Like kube-proxy, the proxy binds every cluster, external and
//! load-balancer IP to a dummy device named `kube-ipvs0` so the kernel
//! accepts packets to them and IPVS (hooked at LOCAL_IN) can forward them.
//! The device is created when missing (with kube-proxy's transmit queue
//! length, 0) and left down (local routes exist for its addresses
//! regardless). Addresses are managed over rtnetlink.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{Handle, LinkDummy};
use rvs_proxy::sync::{AddressBinder, BindError};
use tokio::runtime::Handle as Runtime;

/// Address requests in flight at once on the rtnetlink socket.
const IN_FLIGHT: usize = 256;

/// The device kube-proxy's IPVS mode binds virtual addresses to.
pub const DEVICE: &str = "kube-ipvs0";

/// Binds addresses to `kube-ipvs0` through rtnetlink.
#[derive(Debug)]
pub struct KubeIpvs0 {
    runtime: Runtime,
    handle: Handle,
    index: Option<u32>,
}

fn err(action: &'static str, addr: Option<IpAddr>, e: impl std::fmt::Display) -> BindError {
    BindError {
        action,
        addr,
        detail: e.to_string(),
    }
}

impl KubeIpvs0 {
    /// Opens an rtnetlink connection served on `runtime`. The binder's
    /// methods block on it, so call them from outside the runtime (the
    /// sync loop's thread).
    pub fn new(runtime: &Runtime) -> Result<KubeIpvs0, BindError> {
        let runtime = runtime.clone();
        let handle = runtime.block_on(async {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|e| err("open rtnetlink", None, e))?;
            tokio::spawn(connection);
            Ok::<_, BindError>(handle)
        })?;
        Ok(KubeIpvs0 {
            runtime,
            handle,
            index: None,
        })
    }

    /// The device's index, if it exists.
    fn find(&mut self) -> Result<Option<u32>, BindError> {
        if self.index.is_some() {
            return Ok(self.index);
        }
        let handle = self.handle.clone();
        let found = self.runtime.block_on(async move {
            let mut links = handle.link().get().match_name(DEVICE.to_owned()).execute();
            match links.try_next().await {
                Ok(link) => Ok(link.map(|l| l.header.index)),
                // ENODEV: no such device.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
                Err(e) => Err(err("look up", None, format!("{DEVICE}: {e}"))),
            }
        })?;
        self.index = found;
        Ok(found)
    }

    fn ensure(&mut self) -> Result<u32, BindError> {
        if let Some(index) = self.find()? {
            return Ok(index);
        }
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move {
                handle
                    .link()
                    // A transmit queue length of 0, as kube-proxy's device
                    // has (netlink sends the zero of its default
                    // attributes); the kernel's default for a dummy is 1000.
                    .add(LinkDummy::new(DEVICE).txqueuelen(0).build())
                    .execute()
                    .await
            })
            .map_err(|e| err("create", None, format!("dummy device {DEVICE}: {e}")))?;
        tracing::info!(
            device = DEVICE,
            "created the dummy device for virtual addresses"
        );
        self.find()?
            .ok_or_else(|| err("create", None, format!("{DEVICE} missing after creation")))
    }

    /// The addresses on the device; the cached index is dropped when
    /// the listing fails, so the next call looks the device up again.
    fn messages(&mut self) -> Result<Vec<AddressMessage>, BindError> {
        let Some(index) = self.find()? else {
            return Ok(Vec::new());
        };
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move {
                handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect::<Vec<_>>()
                    .await
            })
            .map_err(|e| err("list", None, format!("addresses of {DEVICE}: {e}")))
            .inspect_err(|_| self.index = None)
    }

    /// The host's own addresses: those of every interface but
    /// `kube-ipvs0` (node ports are served on them; `--cleanup` takes
    /// node ports on them as its own without a cluster view). An address
    /// on both another interface and `kube-ipvs0` is the host's.
    pub fn host_addresses(&mut self) -> Result<BTreeSet<IpAddr>, BindError> {
        let device = self.find()?;
        let handle = self.handle.clone();
        let messages = self
            .runtime
            .block_on(async move {
                handle
                    .address()
                    .get()
                    .execute()
                    .try_collect::<Vec<_>>()
                    .await
            })
            .map_err(|e| err("list", None, format!("the host's addresses: {e}")))?;
        Ok(messages
            .iter()
            .filter(|m| Some(m.header.index) != device)
            .filter_map(address_of)
            .collect())
    }

    /// Deletes the device (for `--cleanup` once it holds nothing).
    pub fn remove_device(&mut self) -> Result<(), BindError> {
        let Some(index) = self.find()? else {
            return Ok(());
        };
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move { handle.link().del(index).execute().await })
            .map_err(|e| err("delete", None, format!("{DEVICE}: {e}")))?;
        self.index = None;
        Ok(())
    }
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })
}

impl AddressBinder for KubeIpvs0 {
    /// Looks the device up again first: full syncs start here, so a
    /// `kube-ipvs0` deleted and re-created behind the proxy's back (a new
    /// index) is found, as kube-proxy finds it by name every sync
    /// (`EnsureDummyDevice`, `netlink.LinkByName`).
    fn bound(&mut self) -> Result<BTreeSet<IpAddr>, BindError> {
        self.index = None;
        Ok(self.messages()?.iter().filter_map(address_of).collect())
    }

    fn bind(&mut self, addr: IpAddr) -> Result<(), BindError> {
        self.bind_all(&[addr]).pop().unwrap_or(Ok(()))
    }

    /// Pipelined: up to 256 requests on the socket at once
    /// (one netlink round trip each made 10,000 addresses cost seconds).
    fn bind_all(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), BindError>> {
        let index = match self.ensure() {
            Ok(index) => index,
            Err(e) => return addrs.iter().map(|_| Err(e.clone())).collect(),
        };
        let handle = self.handle.clone();
        let results: Vec<Result<(), BindError>> = self.runtime.block_on(
            futures_util::stream::iter(addrs.iter().copied())
                .map(|addr| {
                    let prefix = if addr.is_ipv6() { 128 } else { 32 };
                    let request = handle
                        .address()
                        .add(index, addr, prefix)
                        .replace()
                        .execute();
                    async move {
                        request
                            .await
                            .map_err(|e| err("bind", Some(addr), format!("to {DEVICE}: {e}")))
                    }
                })
                .buffered(IN_FLIGHT)
                .collect(),
        );
        if results.iter().any(Result::is_err) {
            // The device may be gone (ENODEV) or re-created with another
            // index: look it up by name again next time.
            self.index = None;
        }
        results
    }

    /// One listing of the device's addresses, then pipelined deletions.
    fn unbind_all(&mut self, addrs: &[IpAddr]) -> Vec<Result<(), BindError>> {
        let messages = match self.messages() {
            Ok(messages) => messages,
            Err(e) => return addrs.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut by_addr: std::collections::HashMap<IpAddr, AddressMessage> = messages
            .into_iter()
            .filter_map(|m| address_of(&m).map(|a| (a, m)))
            .collect();
        let handle = self.handle.clone();
        let requests: Vec<_> = addrs
            .iter()
            .map(|addr| (*addr, by_addr.remove(addr)))
            .collect();
        self.runtime.block_on(
            futures_util::stream::iter(requests)
                .map(|(addr, msg)| {
                    let request = msg.map(|m| handle.address().del(m).execute());
                    async move {
                        match request {
                            // Not bound: nothing to do.
                            None => Ok(()),
                            Some(request) => request.await.map_err(|e| {
                                err("unbind", Some(addr), format!("from {DEVICE}: {e}"))
                            }),
                        }
                    }
                })
                .buffered(IN_FLIGHT)
                .collect(),
        )
    }

    fn unbind(&mut self, addr: IpAddr) -> Result<(), BindError> {
        self.unbind_all(&[addr]).pop().unwrap_or(Ok(()))
    }

    /// Every interface's addresses but `kube-ipvs0`'s, read in one
    /// dump (kube-proxy's `GetAllLocalAddressesExcept`).
    fn local_addresses(&mut self) -> Option<Result<BTreeSet<IpAddr>, BindError>> {
        Some(self.host_addresses())
    }
}

//! The guest kernel: Debian's cloud kernel package, fetched and unpacked
//! without installing it on the host.
//!
//! This module owns `apt-get download` of the package, `dpkg-deb -x`,
//! `depmod -b` (the package ships no `modules.dep`) and the load order of
//! the modules the VM needs, computed with `modprobe --show-depends`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{RigError, host};

/// The metapackage whose dependency names the kernel to boot.
/// `RVS_VM_KERNEL_PACKAGE` overrides it.
pub const DEFAULT_PACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Kernel release, e.g. `6.1.0-41-cloud-amd64`.
    pub release: String,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// Where the package was unpacked (holds `lib/modules/RELEASE`).
    pub root: PathBuf,
}

/// A module to load, with the parameters modprobe would pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleFile {
    /// Path of the `.ko` file.
    pub path: PathBuf,
    /// Parameters for `insmod`.
    pub params: String,
}

/// Returns the kernel cached under `dir`, fetching it first if needed.
///
/// The caller holds the rig's cache lock.
pub fn fetch(dir: &Path) -> Result<Kernel, RigError> {
    let stamp = dir.join("READY");
    let root = dir.join("root");
    if let Ok(release) = std::fs::read_to_string(&stamp) {
        let release = release.trim().to_owned();
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
        if vmlinuz.is_file() {
            return Ok(Kernel {
                release,
                vmlinuz,
                root,
            });
        }
    }
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "depmod", "modprobe"] {
        if host::which(tool).is_none() {
            return Err(RigError::Unavailable(format!(
                "`{tool}` not found: the VM rig needs Debian's apt, dpkg and kmod"
            )));
        }
    }
    let meta = std::env::var("RVS_VM_KERNEL_PACKAGE").unwrap_or_else(|_| DEFAULT_PACKAGE.into());
    let package = resolve_package(&meta)?;
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(RigError::io(format!("create {}", debs.display())))?;
    let deb = match find_deb(&debs, &package)? {
        Some(deb) => deb,
        None => {
            host::run(
                Command::new("apt-get")
                    .args(["download", "-q", &package])
                    .current_dir(&debs),
                &format!("download kernel package {package}"),
            )?;
            find_deb(&debs, &package)?.ok_or_else(|| {
                RigError::Unavailable(format!(
                    "apt-get download {package} left no .deb in {}",
                    debs.display()
                ))
            })?
        }
    };
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(RigError::io(format!("remove {}", root.display())))?;
    }
    host::run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        &format!("unpack {}", deb.display()),
    )?;
    let release = release_of(&root)?;
    host::run(
        Command::new("depmod").arg("-b").arg(&root).arg(&release),
        "compute module dependencies of the guest kernel",
    )?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(RigError::Unavailable(format!(
            "{package} has no {}",
            vmlinuz.display()
        )));
    }
    std::fs::write(&stamp, &release).map_err(RigError::io(format!("write {}", stamp.display())))?;
    Ok(Kernel {
        release,
        vmlinuz,
        root,
    })
}

impl Kernel {
    /// The files to `insmod`, dependencies first, for `module`.
    ///
    /// Returns `Ok(None)` when the kernel has no such module (built in, or
    /// absent in this release).
    pub fn module_files(&self, module: &str) -> Result<Option<Vec<ModuleFile>>, RigError> {
        let output = Command::new("modprobe")
            .arg("-d")
            .arg(&self.root)
            .args(["-S", &self.release, "--show-depends", module])
            .output()
            .map_err(RigError::io("run modprobe --show-depends"))?;
        if !output.status.success() {
            return Ok(None);
        }
        Ok(Some(parse_show_depends(&String::from_utf8_lossy(
            &output.stdout,
        ))))
    }
}

/// Parses `modprobe --show-depends` output: `insmod PATH [PARAMS]` lines
/// (built-in modules print `builtin NAME` and need nothing).
fn parse_show_depends(text: &str) -> Vec<ModuleFile> {
    text.lines()
        .filter_map(|line| line.strip_prefix("insmod "))
        .map(|rest| {
            let rest = rest.trim();
            let (path, params) = rest.split_once(' ').unwrap_or((rest, ""));
            ModuleFile {
                path: PathBuf::from(path),
                params: params.trim().to_owned(),
            }
        })
        .collect()
}

/// The versioned kernel package the metapackage depends on.
fn resolve_package(meta: &str) -> Result<String, RigError> {
    let output = host::run(
        Command::new("apt-cache").args(["depends", "--no-recommends", "--no-suggests", meta]),
        &format!("resolve {meta} (run `apt-get update` if the package lists are missing)"),
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|dep| dep.starts_with("linux-image-"))
        .map(str::to_owned)
        .ok_or_else(|| {
            RigError::Unavailable(format!(
                "apt-cache knows no kernel behind {meta}; run `apt-get update` first"
            ))
        })
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>, RigError> {
    let prefix = format!("{package}_");
    let entries =
        std::fs::read_dir(dir).map_err(RigError::io(format!("list {}", dir.display())))?;
    Ok(entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
    }))
}

fn release_of(root: &Path) -> Result<String, RigError> {
    let modules = root.join("lib/modules");
    let mut entries = std::fs::read_dir(&modules)
        .map_err(RigError::io(format!("list {}", modules.display())))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok());
    entries.next().ok_or_else(|| {
        RigError::Unavailable(format!("no kernel release under {}", modules.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_depends_output_is_parsed_in_order_with_parameters() {
        let text = "builtin crc32c\n\
                    insmod /k/lib/modules/6.1/kernel/net/netfilter/x_tables.ko \n\
                    insmod /k/lib/modules/6.1/kernel/drivers/net/dummy.ko numdummies=0 \n";
        let files = parse_show_depends(text);
        assert_eq!(
            files,
            vec![
                ModuleFile {
                    path: "/k/lib/modules/6.1/kernel/net/netfilter/x_tables.ko".into(),
                    params: String::new()
                },
                ModuleFile {
                    path: "/k/lib/modules/6.1/kernel/drivers/net/dummy.ko".into(),
                    params: "numdummies=0".into()
                },
            ]
        );
    }
}

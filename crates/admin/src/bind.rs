//! Creating the admin socket's file: who may connect, and what it may
//! replace.
//!
//! This module owns the socket file from creation to removal:
//!
//! * **Mode.** The socket is `0600` (owner only) whatever the process
//!   umask, or `0660` and group-owned by one group when
//!   [`BindOptions::group`] names one. Connecting to a unix socket needs
//!   write permission on its file, so the mode is the access control.
//! * **No window with a wider mode.** The socket is bound (and listening)
//!   inside a fresh private directory next to the target (mode `0700`, so
//!   nobody else can reach the socket there), given its group and mode,
//!   and only then published at the target path with `link(2)`, which
//!   never replaces an existing entry and never follows a symlink at the
//!   target. Setting the umask around `bind(2)` was rejected (the umask is
//!   process-wide, so other threads would create files with it), and so
//!   was `chmod` after a `bind` in place (a client that resolved the path
//!   while the mode was still wide could complete its connection after
//!   `listen`). The price is that the parent directory must be writable
//!   (as `bind` needs anyway) and that the private path, a few bytes
//!   longer than the target, must also fit in a socket address.
//! * **What may be replaced.** Only a stale socket of ours: a socket owned
//!   by this process's effective uid on which nobody listens (connecting
//!   is refused). A symlink (followed or dangling), a regular file, a
//!   directory, any other file type, a socket owned by another uid, or a
//!   socket somebody listens on is refused with [`BindError::Occupied`],
//!   naming the path and what is there.
//! * **Removal.** An [`AdminListener`] removes its file when dropped (the
//!   [`crate::Server`] drops it when it stops), but only if the path still
//!   holds the very file it created (same device and inode): a socket an
//!   operator or a newer server put there stays.
//!
//! The checks cannot stop someone who can write to the parent directory
//! from swapping entries between them (the stale-socket check and its
//! removal; the identity check and the removal at the end): keep the
//! socket in a directory only the daemon's user can write to, such as
//! `/run`. A world-writable sticky directory such as `/tmp` is fine for
//! that purpose too, since nobody else may rename or remove our entries
//! there.

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// The socket's mode when only its owner may connect.
pub const OWNER_ONLY_MODE: u32 = 0o600;
/// The socket's mode when one group may connect too.
pub const GROUP_MODE: u32 = 0o660;

/// How to create the admin socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// A group whose members may connect too: the socket becomes mode
    /// `0660` and group-owned by it. `None` (the default): mode `0600`,
    /// only the owner (and root) may connect.
    pub group: Option<SocketGroup>,
}

/// A group, by id or by name (resolved when the socket is created).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketGroup {
    /// A numeric gid.
    Id(u32),
    /// A group name from the group database.
    Name(String),
}

impl FromStr for SocketGroup {
    type Err = GroupParseError;

    /// All digits: a gid; anything else: a group name.
    fn from_str(text: &str) -> Result<SocketGroup, GroupParseError> {
        if text.is_empty() {
            return Err(GroupParseError);
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(SocketGroup::Id)
                .map_err(|_| GroupParseError);
        }
        Ok(SocketGroup::Name(text.to_owned()))
    }
}

impl fmt::Display for SocketGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketGroup::Id(gid) => write!(f, "gid {gid}"),
            SocketGroup::Name(name) => write!(f, "group {name:?}"),
        }
    }
}

/// A group argument that is neither a gid nor a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected a group name or a numeric gid (0 to 4294967295)")]
pub struct GroupParseError;

/// What was found at the socket path instead of a stale socket of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Occupant {
    /// A symbolic link (never followed).
    Symlink {
        /// Where it points.
        target: PathBuf,
    },
    /// A regular file.
    RegularFile,
    /// A directory.
    Directory,
    /// A FIFO, a device or another special file.
    Special,
    /// A socket somebody accepts connections on.
    LiveSocket,
    /// A socket owned by another user.
    ForeignSocket {
        /// Its owner.
        uid: u32,
        /// This process's effective uid.
        ours: u32,
    },
}

impl fmt::Display for Occupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Occupant::Symlink { target } => {
                write!(f, "a symbolic link to {}", target.display())
            }
            Occupant::RegularFile => f.write_str("a regular file"),
            Occupant::Directory => f.write_str("a directory"),
            Occupant::Special => f.write_str("a special file (FIFO or device)"),
            Occupant::LiveSocket => f.write_str("the socket of a running server"),
            Occupant::ForeignSocket { uid, ours } => {
                write!(
                    f,
                    "a socket owned by uid {uid}, not by this process's uid {ours}"
                )
            }
        }
    }
}

/// Why the admin socket could not be created. Every variant names the
/// path.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something other than a stale socket of ours is at the path.
    #[error("refusing to replace {}: it is {occupant}", path.display())]
    Occupied {
        /// The socket path.
        path: PathBuf,
        /// What is there.
        occupant: Occupant,
    },
    /// The path changed while it was being checked or published.
    #[error("{} changed while the admin socket was being created there; try again", path.display())]
    Raced {
        /// The socket path.
        path: PathBuf,
    },
    /// [`BindOptions::group`] names no group.
    #[error("no group named {name:?} (for the admin socket {})", path.display())]
    UnknownGroup {
        /// The group name.
        name: String,
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be given to the group.
    #[error("cannot give the admin socket {} to gid {gid}", path.display())]
    Group {
        /// The socket path.
        path: PathBuf,
        /// The group.
        gid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file-system or socket operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, up to the path.
        action: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl BindError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BindError {
        let path = path.to_owned();
        move |source| BindError::Io {
            action,
            path,
            source,
        }
    }
}

/// A listening admin socket and the file it was published at.
///
/// Dropping it closes the listener and removes the file, if the path
/// still holds the file this listener created. Made from a plain
/// [`UnixListener`] (`From`), it owns no file and removes nothing.
#[derive(Debug)]
pub struct AdminListener {
    listener: UnixListener,
    file: OwnedFile,
}

impl AdminListener {
    /// The listener.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Where the socket was published, if this listener owns its file.
    pub fn path(&self) -> Option<&Path> {
        self.file.0.as_ref().map(|f| f.path.as_path())
    }

    /// The listener alone; its file is then left in place for good.
    pub fn into_listener(mut self) -> UnixListener {
        self.file.0 = None;
        self.listener
    }
}

impl From<UnixListener> for AdminListener {
    fn from(listener: UnixListener) -> AdminListener {
        AdminListener {
            listener,
            file: OwnedFile(None),
        }
    }
}

/// The published socket file, identified by device and inode.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// Removes its file on drop, if it is still the one created.
#[derive(Debug)]
struct OwnedFile(Option<SocketFile>);

impl Drop for OwnedFile {
    fn drop(&mut self) {
        let Some(file) = self.0.take() else {
            return;
        };
        let path = file.path.display();
        match std::fs::symlink_metadata(&file.path) {
            Ok(meta) if meta.dev() == file.dev && meta.ino() == file.ino => {
                match std::fs::remove_file(&file.path) {
                    Ok(()) => tracing::debug!(%path, "removed the admin socket"),
                    Err(e) => {
                        tracing::warn!(%path, error = %e, "could not remove the admin socket");
                    }
                }
            }
            Ok(_) => {
                tracing::info!(%path, "the admin socket was replaced by another file; leaving it");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(%path, "the admin socket was already removed");
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "could not check the admin socket before removing it");
            }
        }
    }
}

/// [`bind_with`] with the default options: mode `0600`, owner only.
pub fn bind(path: impl AsRef<Path>) -> Result<AdminListener, BindError> {
    bind_with(path, &BindOptions::default())
}

/// Creates the admin socket at `path` and listens on it.
///
/// The socket gets mode `0600` (or `0660` and `opts.group`) whatever the
/// umask; a stale socket of ours at `path` is replaced, anything else
/// there is refused. The crate docs give the exact rules.
pub fn bind_with(path: impl AsRef<Path>, opts: &BindOptions) -> Result<AdminListener, BindError> {
    let path = path.as_ref();
    let gid = match &opts.group {
        None => None,
        Some(group) => Some(resolve(group, path)?),
    };
    clear_stale(path)?;

    let staging = Staging::create(path)?;
    let private = staging.dir.join("s");
    let listener =
        UnixListener::bind(&private).map_err(BindError::io("cannot bind a socket at", &private))?;
    let mode = match gid {
        Some(gid) => {
            std::os::unix::fs::lchown(&private, None, Some(gid)).map_err(|source| {
                BindError::Group {
                    path: path.to_owned(),
                    gid,
                    source,
                }
            })?;
            GROUP_MODE
        }
        None => OWNER_ONLY_MODE,
    };
    // The private directory holds nothing but our socket: no symlink to
    // follow here.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(mode))
        .map_err(BindError::io("cannot set the mode of", &private))?;
    let meta =
        std::fs::symlink_metadata(&private).map_err(BindError::io("cannot inspect", &private))?;
    match std::fs::hard_link(&private, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(BindError::Raced {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(BindError::io("cannot publish the admin socket at", path)(e)),
    }
    drop(staging);
    tracing::debug!(path = %path.display(), mode = format_args!("{mode:o}"), gid, "admin socket created");
    Ok(AdminListener {
        listener,
        file: OwnedFile(Some(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })),
    })
}

fn resolve(group: &SocketGroup, path: &Path) -> Result<u32, BindError> {
    match group {
        SocketGroup::Id(gid) => Ok(*gid),
        SocketGroup::Name(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(found)) => Ok(found.gid.as_raw()),
            Ok(None) => Err(BindError::UnknownGroup {
                name: name.clone(),
                path: path.to_owned(),
            }),
            Err(errno) => Err(BindError::Io {
                action: "cannot look up the group for the admin socket",
                path: path.to_owned(),
                source: errno.into(),
            }),
        },
    }
}

/// Makes `path` free: nothing there, or a stale socket of ours that is
/// then removed. Anything else is refused.
fn clear_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BindError::io("cannot inspect", path)(e)),
    };
    let occupied = |occupant| BindError::Occupied {
        path: path.to_owned(),
        occupant,
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(path).unwrap_or_default();
        return Err(occupied(Occupant::Symlink { target }));
    }
    if kind.is_file() {
        return Err(occupied(Occupant::RegularFile));
    }
    if kind.is_dir() {
        return Err(occupied(Occupant::Directory));
    }
    if !kind.is_socket() {
        return Err(occupied(Occupant::Special));
    }
    let ours = nix::unistd::geteuid().as_raw();
    if meta.uid() != ours {
        return Err(occupied(Occupant::ForeignSocket {
            uid: meta.uid(),
            ours,
        }));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(occupied(Occupant::LiveSocket)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let again =
                std::fs::symlink_metadata(path).map_err(BindError::io("cannot inspect", path))?;
            if again.dev() != meta.dev() || again.ino() != meta.ino() {
                return Err(BindError::Raced {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path)
                .map_err(BindError::io("cannot remove the stale admin socket", path))?;
            tracing::info!(path = %path.display(), "removed a stale admin socket");
            Ok(())
        }
        Err(e) => Err(BindError::io(
            "cannot tell whether a server listens on the socket",
            path,
        )(e)),
    }
}

/// A private directory (mode 0700) next to the socket path, removed with
/// its contents on drop.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn create(path: &Path) -> Result<Staging, BindError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut attempt = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = parent.join(format!(".rvs-admin.{}.{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let staging = Staging { dir };
                    // The umask can only have narrowed 0700; make sure the
                    // owner can still use it.
                    std::fs::set_permissions(&staging.dir, std::fs::Permissions::from_mode(0o700))
                        .map_err(BindError::io("cannot set the mode of", &staging.dir))?;
                    return Ok(staging);
                }
                // Left by a process that had our pid before: try another name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(BindError::io(
                        "cannot create a private directory for the admin socket in",
                        parent,
                    )(e));
                }
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the admin socket's private directory");
        }
    }
}

//! The granted workspace directory as a capability: a handle that cannot name
//! anything outside its root.
//!
//! Every file access of the `workspace` tool and of merges into the workspace goes
//! through [`WorkspaceDir`], a `cap_std::fs::Dir` opened once on the granted
//! directory. Paths are resolved beneath that handle by the kernel-backed
//! `openat`-style walk of `cap-std` (openat2 `RESOLVE_BENEATH` where Linux has it):
//! absolute paths, `..` past the root and symlinks — live or dangling, on the last
//! component or on a parent directory — that lead outside are refused at the moment of
//! use, so there is no gap between a check and an open for a swapped-in symlink to
//! slip through. A file with more than one hard link is refused as well (it may be a
//! link to a file outside the workspace, which no path check can see).
//!
//! Not for: deciding who may write (only the root task writes the directory; other
//! tasks write their copy-on-write views, `super::overlay`).

use cap_std::fs::{Dir, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// A handle on the workspace directory; cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkspaceDir {
    dir: Arc<Dir>,
    root: PathBuf,
}

/// Why a workspace path was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The path names something outside the workspace.
    #[error(
        "path `{0}` leaves the workspace (absolute paths, `..` and symlinks out are not allowed)"
    )]
    Escape(String),
    /// The file has other hard links, which may lead outside the workspace.
    #[error("`{0}` has {1} hard links; a workspace file with other links is refused")]
    HardLink(String, u64),
    /// The file is larger than the caller accepts.
    #[error("`{0}` is larger than {1} bytes")]
    TooLarge(String, u64),
    /// Any other I/O failure.
    #[error("`{0}`: {1}")]
    Io(String, std::io::Error),
}

impl WorkspaceError {
    /// Whether this is a refusal (rather than a failure).
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            WorkspaceError::Escape(_) | WorkspaceError::HardLink(..)
        )
    }
}

/// Normalise a guest's path: `/`-separated, relative, no `.`/`..` components. `""`
/// names the root. Refuses absolute paths and `..`.
pub fn normalise(rel: &str) -> Result<String, WorkspaceError> {
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(WorkspaceError::Escape(rel.to_string())),
        }
    }
    Ok(parts.join("/"))
}

/// Map an I/O error on `path` to a refusal when the sandbox refused it.
fn classify(path: &str, e: std::io::Error) -> WorkspaceError {
    // cap-std reports an escape as PermissionDenied ("a path led outside of the
    // filesystem"); the kernel's RESOLVE_BENEATH as EXDEV.
    let escaped = e.kind() == std::io::ErrorKind::PermissionDenied
        || e.raw_os_error() == Some(libc::EXDEV)
        || e.to_string().contains("outside of the filesystem");
    if escaped {
        WorkspaceError::Escape(path.to_string())
    } else {
        WorkspaceError::Io(path.to_string(), e)
    }
}

impl WorkspaceDir {
    /// Open the workspace at `dir`, creating it if missing.
    pub fn open(dir: &Path) -> anyhow::Result<WorkspaceDir> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create workspace {}: {e}", dir.display()))?;
        let root = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("bad workspace {}: {e}", dir.display()))?;
        // The one use of ambient authority: the operator granted this directory.
        let handle = Dir::open_ambient_dir(&root, cap_std::ambient_authority())
            .map_err(|e| anyhow::anyhow!("cannot open workspace {}: {e}", root.display()))?;
        Ok(WorkspaceDir {
            dir: Arc::new(handle),
            root,
        })
    }

    /// The directory's path (for messages; never used to open files).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Map an I/O failure on `path` to a refusal when some prefix of the path is a
    /// symlink that leads outside (some calls, e.g. `mkdir` on such a link, report only
    /// "exists"). Only the message depends on this: the access itself was refused by
    /// the handle either way.
    fn failure(&self, path: &str, e: std::io::Error) -> WorkspaceError {
        let err = classify(path, e);
        if !matches!(err, WorkspaceError::Io(..)) {
            return err;
        }
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if let Err(e) = self.dir.canonicalize(&prefix)
                && matches!(classify(&prefix, e), WorkspaceError::Escape(_))
            {
                return WorkspaceError::Escape(path.to_string());
            }
        }
        err
    }

    fn check_links(path: &str, file: &std::fs::File) -> Result<(), WorkspaceError> {
        let meta = file
            .metadata()
            .map_err(|e| WorkspaceError::Io(path.into(), e))?;
        if meta.is_file() && meta.nlink() > 1 {
            return Err(WorkspaceError::HardLink(path.into(), meta.nlink()));
        }
        Ok(())
    }

    /// Read a file, refusing one larger than `max` bytes. `Ok(None)` if it does not exist.
    pub fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, WorkspaceError> {
        let path = normalise(path)?;
        let file = match self.dir.open(&path) {
            Ok(f) => f.into_std(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failure(&path, e)),
        };
        Self::check_links(&path, &file)?;
        let len = file
            .metadata()
            .map_err(|e| WorkspaceError::Io(path.clone(), e))?
            .len();
        if len > max {
            return Err(WorkspaceError::TooLarge(path, max));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| WorkspaceError::Io(path.clone(), e))?;
        if bytes.len() as u64 > max {
            return Err(WorkspaceError::TooLarge(path, max));
        }
        Ok(Some(bytes))
    }

    /// Write (`append = false`: replace) or append to a file, creating it and its
    /// parent directories. Returns the file's content afterwards.
    pub fn write(
        &self,
        path: &str,
        content: &[u8],
        append: bool,
    ) -> Result<Vec<u8>, WorkspaceError> {
        let path = normalise(path)?;
        if path.is_empty() {
            return Err(WorkspaceError::Io(
                path,
                std::io::Error::other("the workspace root is a directory"),
            ));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir
                .create_dir_all(parent)
                .map_err(|e| self.failure(&path, e))?;
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        // Never truncate before the hard-link check: a linked file is left untouched.
        let file = self
            .dir
            .open_with(&path, &options)
            .map_err(|e| self.failure(&path, e))?;
        let mut file = file.into_std();
        Self::check_links(&path, &file)?;
        let io = |e| WorkspaceError::Io(path.clone(), e);
        let mut after = Vec::new();
        if append {
            file.read_to_end(&mut after).map_err(io)?;
        } else {
            file.set_len(0).map_err(io)?;
        }
        file.write_all(content).map_err(io)?;
        file.sync_data().map_err(io)?;
        after.extend_from_slice(content);
        Ok(after)
    }

    /// Names in directory `dir` (`""` for the root), sorted; directories end with `/`.
    /// `Ok(None)` if it does not exist.
    pub fn list(&self, dir: &str) -> Result<Option<Vec<String>>, WorkspaceError> {
        let dir = normalise(dir)?;
        let entries = if dir.is_empty() {
            self.dir.entries()
        } else {
            self.dir.read_dir(&dir)
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failure(&dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| WorkspaceError::Io(dir.clone(), e))?;
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                name.push('/');
            }
            names.push(name);
        }
        names.sort();
        Ok(Some(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> (tempfile::TempDir, WorkspaceDir, PathBuf) {
        let base = tempfile::Builder::new()
            .prefix(&format!("agentflow-wsdir-{name}-"))
            .tempdir()
            .unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let ws = WorkspaceDir::open(&base.path().join("ws")).unwrap();
        (base, ws, outside)
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let (_s, ws, outside) = scratch("escape");
        let root = ws.root().to_path_buf();
        std::fs::write(outside.join("secret.txt"), "secret").unwrap();
        symlink(outside.join("c.txt"), root.join("dangling")).unwrap();
        symlink(outside.join("secret.txt"), root.join("live")).unwrap();
        symlink(&outside, root.join("out")).unwrap();
        std::fs::hard_link(outside.join("secret.txt"), root.join("hard")).unwrap();
        for (path, append) in [
            ("dangling", false),
            ("dangling", true),
            ("live", false),
            ("out/new.txt", false),
            ("out/sub/new.txt", false),
            ("../outside/x.txt", false),
            ("/tmp/x.txt", false),
            ("hard", false),
            ("hard", true),
        ] {
            let err = ws.write(path, b"pwned", append).unwrap_err();
            assert!(err.is_denial(), "{path}: {err}");
        }
        for path in ["live", "out/secret.txt", "hard", "../outside/secret.txt"] {
            let err = ws.read(path, 1 << 20).unwrap_err();
            assert!(err.is_denial(), "{path}: {err}");
        }
        assert!(ws.list("out").unwrap_err().is_denial());
        assert!(!outside.join("c.txt").exists(), "nothing created outside");
        assert!(!outside.join("new.txt").exists());
        assert!(!outside.join("x.txt").exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
            "secret"
        );
        // Inside the root everything works, symlinks within it included.
        ws.write("a/b.txt", b"one", false).unwrap();
        assert_eq!(ws.write("a/b.txt", b"two", true).unwrap(), b"onetwo");
        symlink("b.txt", root.join("a/alias")).unwrap();
        assert_eq!(ws.read("a/alias", 100).unwrap().unwrap(), b"onetwo");
        assert_eq!(ws.read("a/./b.txt", 100).unwrap().unwrap(), b"onetwo");
        assert!(matches!(
            ws.read("a/b.txt", 3),
            Err(WorkspaceError::TooLarge(..))
        ));
        assert_eq!(ws.read("missing", 100).unwrap(), None);
        assert_eq!(ws.list("a").unwrap().unwrap(), vec!["alias", "b.txt"]);
    }

    /// A directory swapped for a symlink to outside while writes go on: no write ever
    /// lands outside, whichever way each race goes.
    #[test]
    fn a_symlink_swapped_in_during_writes_never_leads_out() {
        let (_s, ws, outside) = scratch("race");
        let root = ws.root().to_path_buf();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        symlink(&outside, root.join("sub.link")).unwrap();
        let swapper = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                use std::os::unix::ffi::OsStrExt;
                let c = |p: PathBuf| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
                let (sub, link) = (c(root.join("sub")), c(root.join("sub.link")));
                let mut swaps = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: two valid NUL-terminated paths; RENAME_EXCHANGE swaps the
                    // directory and the symlink atomically, so `sub` always exists.
                    let rc = unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            sub.as_ptr(),
                            libc::AT_FDCWD,
                            link.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
                    swaps += 1;
                    std::thread::yield_now();
                }
                swaps
            })
        };
        let (mut ok, mut refused) = (0, 0);
        for i in 0..4000 {
            match ws.write("sub/x.txt", format!("{i}").as_bytes(), i % 2 == 0) {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(swaps > 10, "the race ran ({swaps} swaps)");
        assert!(
            ok > 0 && refused > 0,
            "both sides of the race seen: {ok} ok, {refused} refused"
        );
        assert!(
            !outside.join("x.txt").exists(),
            "a write went through the swapped-in symlink"
        );
    }
}

//! A busybox image for `docker import`, built from Debian's static busybox without a registry.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;

/// Debian's busybox-static installs this statically linked binary.
const BUSYBOX: &str = "/bin/busybox";

/// A `docker import`-able tarball: Debian's static busybox as `/bin/busybox`, a symlink per
/// applet (sh, ping, wget, httpd, sha256sum, sleep, ...), and the usual empty top-level dirs.
pub struct BusyboxImage {
    pub tar: PathBuf,
}

impl BusyboxImage {
    /// Builds the rootfs and tarball under `dir` (e.g. the lab dir, removed with it).
    pub fn build(dir: &Path) -> BusyboxImage {
        let busybox = Path::new(BUSYBOX);
        assert!(
            is_static_elf(busybox),
            "{BUSYBOX} is missing or not statically linked: install Debian's busybox-static \
             (`make deps`)"
        );
        let rootfs = dir.join("image-rootfs");
        for sub in ["bin", "dev", "etc", "proc", "sys", "tmp", "root"] {
            fs::create_dir_all(rootfs.join(sub)).expect("create image rootfs dirs");
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod image /tmp");
        fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox into the image");
        let list = run(Command::new(busybox).arg("--list"));
        for applet in String::from_utf8_lossy(&list.stdout)
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        {
            symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("write image /etc/passwd");
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("write image /etc/group");
        let tar = dir.join("busybox-image.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg("."));
        BusyboxImage { tar }
    }
}

/// Whether `path` is an ELF executable without a program interpreter (PT_INTERP).
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    // ELF64, little endian: the only kind Debian amd64/arm64 ship.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|p_type| p_type != PT_INTERP)
    })
}

//! A writer for the cpio "newc" format, the one the Linux kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst), so that `cargo xtask linux`
//! needs no `cpio` tool and no root: device nodes are plain entries with a mode and an rdev.
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the path
//! with a NUL, padding to 4 bytes, the data, padding to 4 bytes. The archive ends with the
//! entry `TRAILER!!!` and is padded to 512 bytes like cpio's own output. Entries are written
//! parents first (the kernel creates files in directories that must already exist); owners are
//! root and times are 0, so the same inputs always give the same bytes.

use std::collections::HashSet;

use anyhow::{Result, bail};

/// The magic of a newc header without checksums.
pub const MAGIC: &[u8; 6] = b"070701";
/// Size of a newc header: the magic and thirteen 8-digit hex fields.
pub const HEADER_LEN: usize = 6 + 13 * 8;
/// The path of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File types, as in `st_mode`.
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFCHR: u32 = 0o020_000;

/// A newc archive being built in memory.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    /// Every path added so far, to refuse duplicates and orphans.
    paths: HashSet<String>,
    /// Directories added so far; the root always exists.
    dirs: HashSet<String>,
    next_ino: u32,
}

/// The fields of one header that differ between entries.
struct Header<'a> {
    path: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    size: usize,
}

impl Archive {
    pub fn new() -> Self {
        Archive {
            next_ino: 1,
            ..Archive::default()
        }
    }

    /// A directory; `mode` holds the permission bits (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = self.check(path, mode)?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFDIR | mode,
                nlink: 2,
                rdev: (0, 0),
                size: 0,
            },
            &[],
        );
        self.dirs.insert(path);
        Ok(())
    }

    /// A regular file with its contents.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let path = self.check(path, mode)?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFREG | mode,
                nlink: 1,
                rdev: (0, 0),
                size: data.len(),
            },
            data,
        );
        Ok(())
    }

    /// A symbolic link: its data is the target, without a NUL.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        if target.is_empty() {
            bail!("cpio: symlink {path} has an empty target");
        }
        let path = self.check(path, 0o777)?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                rdev: (0, 0),
                size: target.len(),
            },
            target.as_bytes(),
        );
        Ok(())
    }

    /// A character device node, e.g. `/dev/console` = (5, 1).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        let path = self.check(path, mode)?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFCHR | mode,
                nlink: 1,
                rdev: (major, minor),
                size: 0,
            },
            &[],
        );
        Ok(())
    }

    /// Ends the archive with the trailer and pads it to 512 bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry(
            Header {
                path: TRAILER,
                mode: 0,
                nlink: 1,
                rdev: (0, 0),
                size: 0,
            },
            &[],
        );
        let padded = self.bytes.len().next_multiple_of(512);
        self.bytes.resize(padded, 0);
        self.bytes
    }

    /// Normalises `path` (no leading `/`) and refuses what the kernel would not unpack as meant.
    fn check(&self, path: &str, mode: u32) -> Result<String> {
        let relative = path.trim_start_matches('/');
        if relative.is_empty()
            || relative
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            bail!("cpio: `{path}` is not a plain path below the root");
        }
        if mode & !0o7777 != 0 {
            bail!("cpio: mode {mode:o} of {path} has bits beyond the permissions");
        }
        if self.paths.contains(relative) {
            bail!("cpio: {path} is in the archive twice");
        }
        if let Some((parent, _)) = relative.rsplit_once('/')
            && !self.dirs.contains(parent)
        {
            bail!("cpio: add the directory /{parent} before /{relative}");
        }
        Ok(relative.to_string())
    }

    fn entry(&mut self, header: Header<'_>, data: &[u8]) {
        debug_assert_eq!(header.size, data.len());
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime
            u32::try_from(header.size).expect("a cpio entry is below 4 GiB"),
            0, // devmajor
            0, // devminor
            header.rdev.0,
            header.rdev.1,
            u32::try_from(header.path.len() + 1).expect("short path"),
            0, // check: unused in 070701
        ];
        let start = self.bytes.len();
        self.bytes.extend_from_slice(MAGIC);
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        debug_assert_eq!(self.bytes.len() - start, HEADER_LEN);
        self.bytes.extend_from_slice(header.path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
        if header.path != TRAILER {
            self.paths.insert(header.path.to_string());
        }
    }

    fn pad(&mut self) {
        let padded = self.bytes.len().next_multiple_of(4);
        self.bytes.resize(padded, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back from an archive.
    #[derive(Debug)]
    struct Entry {
        /// Offset of its header in the archive.
        offset: usize,
        fields: [u32; 13],
        path: String,
        data: Vec<u8>,
    }

    impl Entry {
        fn ino(&self) -> u32 {
            self.fields[0]
        }
        fn mode(&self) -> u32 {
            self.fields[1]
        }
        fn nlink(&self) -> u32 {
            self.fields[4]
        }
        fn rdev(&self) -> (u32, u32) {
            (self.fields[9], self.fields[10])
        }
    }

    /// A strict newc reader: every header field must be 8 uppercase hex digits, every name
    /// NUL-terminated, the header+name and the data each padded with zeros to 4 bytes.
    fn parse(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(at % 4, 0, "header at {at} is not 4-byte aligned");
            let header = &archive[at..at + HEADER_LEN];
            assert_eq!(&header[..6], MAGIC, "bad magic at {at}");
            let mut fields = [0u32; 13];
            for (i, field) in fields.iter_mut().enumerate() {
                let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).unwrap();
                assert!(
                    text.bytes()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
                    "field {i} of the entry at {at} is {text:?}"
                );
                *field = u32::from_str_radix(text, 16).unwrap();
            }
            let name_len = fields[11] as usize;
            let name_start = at + HEADER_LEN;
            let name = &archive[name_start..name_start + name_len];
            assert_eq!(name.last(), Some(&0), "name at {at} lacks its NUL");
            let path = std::str::from_utf8(&name[..name_len - 1])
                .unwrap()
                .to_string();
            let data_start = (name_start + name_len).next_multiple_of(4);
            assert!(
                archive[name_start + name_len..data_start]
                    .iter()
                    .all(|&b| b == 0)
            );
            let size = fields[6] as usize;
            let data = archive[data_start..data_start + size].to_vec();
            let next = (data_start + size).next_multiple_of(4);
            assert!(archive[data_start + size..next].iter().all(|&b| b == 0));
            let done = path == TRAILER;
            entries.push(Entry {
                offset: at,
                fields,
                path,
                data,
            });
            at = next;
            if done {
                assert_eq!(archive.len() % 512, 0, "archive is not padded to 512 bytes");
                assert!(
                    archive[at..].iter().all(|&b| b == 0),
                    "bytes after the trailer"
                );
                return entries;
            }
        }
    }

    fn sample() -> Vec<u8> {
        let mut archive = Archive::new();
        archive.dir("/bin", 0o755).unwrap();
        archive.dir("dev", 0o755).unwrap();
        archive.file("/bin/busybox", 0o755, b"\x7fELF...").unwrap();
        archive.symlink("/bin/sh", "busybox").unwrap();
        archive.char_device("/dev/console", 0o600, 5, 1).unwrap();
        archive.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        archive.file("/empty", 0o644, b"").unwrap();
        archive.finish()
    }

    #[test]
    fn round_trips_every_kind_of_entry() {
        let bytes = sample();
        let entries = parse(&bytes);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "dev",
                "bin/busybox",
                "bin/sh",
                "dev/console",
                "init",
                "empty",
                TRAILER
            ]
        );

        let dir = &entries[0];
        assert_eq!(dir.mode(), 0o040_755);
        assert_eq!(dir.nlink(), 2);
        assert!(dir.data.is_empty());

        let busybox = &entries[2];
        assert_eq!(busybox.mode(), 0o100_755);
        assert_eq!(busybox.data, b"\x7fELF...");
        assert_eq!(busybox.nlink(), 1);

        let sh = &entries[3];
        assert_eq!(sh.mode(), 0o120_777);
        assert_eq!(sh.data, b"busybox");

        let console = &entries[4];
        assert_eq!(console.mode(), 0o020_600);
        assert_eq!(console.rdev(), (5, 1));
        assert!(console.data.is_empty());

        // Root-owned, time 0, no checksum, distinct inode numbers.
        for entry in &entries {
            assert_eq!((entry.fields[2], entry.fields[3]), (0, 0), "{}", entry.path);
            assert_eq!(entry.fields[5], 0, "mtime of {}", entry.path);
            assert_eq!(entry.fields[12], 0, "check of {}", entry.path);
        }
        let mut inos: Vec<u32> = entries[..entries.len() - 1]
            .iter()
            .map(Entry::ino)
            .collect();
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(inos.len(), entries.len() - 1);
    }

    #[test]
    fn header_layout_is_exact() {
        let mut archive = Archive::new();
        archive.file("a", 0o644, b"xyz").unwrap();
        let bytes = archive.finish();
        // ino 1, mode 100644, uid, gid, nlink 1, mtime, size 3, maj, min, rmaj, rmin, namesize 2.
        let expected = "070701\
                        00000001000081A4000000000000000000000001000000000000000300000000\
                        00000000000000000000000000000002\
                        00000000";
        assert_eq!(&bytes[..HEADER_LEN], expected.as_bytes());
        // 110 + "a\0" = 112: already aligned, so the data follows at once, padded to 116.
        assert_eq!(&bytes[112..116], b"xyz\0");
        let entries = parse(&bytes);
        assert_eq!(entries[1].offset, 116);
        assert_eq!(entries[1].path, TRAILER);
        assert_eq!(entries[1].fields[11], 11);
        assert_eq!(bytes.len(), 512);
    }

    #[test]
    fn pads_odd_names_and_data() {
        for name_len in 1..=8 {
            for data_len in 0..=5 {
                let mut archive = Archive::new();
                let name = "n".repeat(name_len);
                archive.file(&name, 0o644, &vec![0xAA; data_len]).unwrap();
                archive.symlink("l", &"t".repeat(data_len + 1)).unwrap();
                let entries = parse(&archive.finish());
                assert_eq!(entries[0].path, name);
                assert_eq!(entries[0].data.len(), data_len);
                assert_eq!(entries[1].data.len(), data_len + 1);
            }
        }
    }

    #[test]
    fn same_input_same_bytes() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let bytes = Archive::new().finish();
        let entries = parse(&bytes);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].path, TRAILER);
        assert_eq!(entries[0].ino(), 0);
    }

    #[test]
    fn refuses_bad_paths() {
        let mut archive = Archive::new();
        archive.dir("bin", 0o755).unwrap();
        for bad in ["", "/", "a//b", "./x", "bin/../etc", "bin/."] {
            assert!(archive.file(bad, 0o644, b"").is_err(), "{bad:?}");
        }
        let orphan = format!("{:#}", archive.file("/etc/passwd", 0o644, b"").unwrap_err());
        assert!(
            orphan.contains("add the directory /etc before /etc/passwd"),
            "{orphan}"
        );
        archive.file("bin/x", 0o755, b"").unwrap();
        assert!(archive.file("/bin/x", 0o755, b"").is_err(), "duplicate");
        assert!(archive.symlink("bin/y", "").is_err(), "empty link target");
        assert!(
            archive.file("bin/z", 0o100_644, b"").is_err(),
            "type bits in mode"
        );
    }
}

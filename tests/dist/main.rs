//! The release artifacts of `cargo xtask dist`, checked where they are meant to run: the
//! portable binary's glibc needs read from its ELF file, the binary and a real agent run in a
//! Debian 11 root (glibc 2.31), the Debian package installed there with `dpkg -i`, and the
//! tarball and `SHA256SUMS` taken apart.
//!
//! `cargo xtask test` builds the artifacts and the Debian 11 root first and names them in
//! `ORANGE_DIST_DIR` and `ORANGE_TEST_BULLSEYE`; without them every test fails, naming that
//! command. The tests use chroot and mount, so they run as root.

#[allow(dead_code, unused_imports)]
#[path = "../it/support/mod.rs"]
mod support;

#[path = "../../xtask/src/elf.rs"]
mod elf;

mod artifacts;
mod binary;
mod deb;
mod debian11;
mod tarball;

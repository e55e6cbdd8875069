//! Puts `guest.ld` on the link search path of every crate that depends on this one.
//!
//! A dependency's `rustc-link-arg` does not reach the final binary, but its `rustc-link-search`
//! does; so each guest's own build script only has to say `-Tguest.ld`, without knowing where
//! this crate lives.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("guest.ld", out.join("guest.ld")).expect("copy guest.ld to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=guest.ld");
}

//! Links the guest with the runtime's layout (`guest.ld`, found on the search path that
//! `veil-guest-rt`'s build script sets) when building the real image; a host build of the
//! workspace links nothing of ours.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Tguest.ld");
    }
}

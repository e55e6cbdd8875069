//! Build script for the Veil image.
//!
//! Board facts that a DTB cannot give (the load address, the early UART, how to power off) live
//! in `boards/<name>.toml`. This script reads the board named by `VEIL_BOARD` (default
//! `qemu-virt`), turns it into constants for the code (`$OUT_DIR/board.rs`) and, when building the
//! bare-metal image, hands the load address and the linker script to the linker.

use std::{env, fs, path::PathBuf};

#[derive(serde::Deserialize)]
struct Board {
    name: String,
    load_address: u64,
    early_uart: EarlyUart,
    poweroff: String,
}

#[derive(serde::Deserialize)]
struct EarlyUart {
    kind: String,
    base: u64,
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let board_name = env::var("VEIL_BOARD").unwrap_or_else(|_| "qemu-virt".to_string());
    let board_file = root.join("boards").join(format!("{board_name}.toml"));
    println!("cargo:rerun-if-env-changed=VEIL_BOARD");
    println!("cargo:rerun-if-changed={}", board_file.display());
    println!("cargo:rerun-if-changed=linker/veil.ld");

    let text = fs::read_to_string(&board_file).unwrap_or_else(|e| {
        panic!(
            "VEIL_BOARD={board_name}: cannot read {}: {e}",
            board_file.display()
        )
    });
    let board: Board =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", board_file.display()));
    assert_eq!(
        board.early_uart.kind,
        "pl011",
        "{}: only a pl011 early UART is supported",
        board_file.display()
    );
    assert_eq!(
        board.load_address % 0x1000,
        0,
        "{}: load_address must be page aligned",
        board_file.display()
    );
    let poweroff = match board.poweroff.as_str() {
        "psci" => "PowerOffMethod::Psci",
        "bcm2711-watchdog" => "PowerOffMethod::Bcm2711Watchdog",
        other => panic!(
            "{}: unknown poweroff method {other:?}",
            board_file.display()
        ),
    };

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(
        out.join("board.rs"),
        format!(
            "/// The board this image was built for (`boards/{name}.toml`).\n\
             pub const NAME: &str = {name:?};\n\
             /// Where the image is loaded and linked.\n\
             pub const LOAD_ADDRESS: u64 = {load:#x};\n\
             /// The PL011 Veil may use before it has read the DTB.\n\
             pub const EARLY_UART_BASE: u64 = {uart:#x};\n\
             /// How this board turns itself off.\n\
             pub const POWEROFF: PowerOffMethod = {poweroff};\n",
            name = board.name,
            load = board.load_address,
            uart = board.early_uart.base,
        ),
    )
    .unwrap();

    // Only the bare-metal image is linked with Veil's script; host unit tests link normally.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!(
            "cargo:rustc-link-arg-bins=-T{}",
            root.join("linker/veil.ld").display()
        );
        println!(
            "cargo:rustc-link-arg-bins=--defsym=VEIL_LOAD_ADDRESS={:#x}",
            board.load_address
        );
    }
}

//! Which VM the host console's keyboard talks to.
//!
//! Every VM's output shares the one host console (each line prefixed with its VM's name when
//! there are several); input goes to one VM at a time, VM 0 at first. Typing the escape byte
//! Ctrl-] (0x1d) and then a digit `n` sends what follows to VM `n`; Ctrl-] twice sends one
//! Ctrl-] on; Ctrl-] and anything else sends both bytes on, so nothing typed is lost. Ctrl-]
//! rather than QEMU's and screen's Ctrl-A, which the terminal programs in between would take.
//!
//! This is the pure part: a state machine fed one byte at a time ([`InputSwitch::feed`]).
//! `board::console::forward_input` owns one and moves the bytes.

/// The escape byte: Ctrl-] (ASCII GS).
pub const ESCAPE: u8 = 0x1d;

/// What one typed byte amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Typed {
    /// Bytes for the VM input goes to now (one, or the escape and the byte after it).
    Bytes([u8; 2], usize),
    /// From now on input goes to VM `n`.
    SwitchTo(usize),
    /// Nothing yet: the escape byte, waiting for the next one.
    Pending,
}

impl Typed {
    /// The bytes to pass on, if any.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Typed::Bytes(bytes, count) => &bytes[..*count],
            _ => &[],
        }
    }
}

/// The escape sequence's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputSwitch {
    escaped: bool,
}

impl InputSwitch {
    pub const fn new() -> Self {
        InputSwitch { escaped: false }
    }

    /// Takes the next typed byte.
    pub fn feed(&mut self, byte: u8) -> Typed {
        if !self.escaped {
            if byte == ESCAPE {
                self.escaped = true;
                return Typed::Pending;
            }
            return Typed::Bytes([byte, 0], 1);
        }
        self.escaped = false;
        match byte {
            ESCAPE => Typed::Bytes([ESCAPE, 0], 1),
            b'0'..=b'9' => Typed::SwitchTo(usize::from(byte - b'0')),
            other => Typed::Bytes([ESCAPE, other], 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// Feeds `typed` and returns what reaches each VM, starting at VM 0, with `vms` VMs.
    fn route(typed: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let mut switch = InputSwitch::new();
        let mut target = 0;
        let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
        for &b in typed {
            match switch.feed(b) {
                Typed::SwitchTo(n) => target = n,
                t => {
                    for &byte in t.bytes() {
                        match out.last_mut() {
                            Some((vm, bytes)) if *vm == target => bytes.push(byte),
                            _ => out.push((target, std::vec![byte])),
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn plain_input_goes_to_vm_0() {
        assert_eq!(route(b"ls -l\n"), [(0, b"ls -l\n".to_vec())]);
    }

    #[test]
    fn escape_and_a_digit_switch() {
        assert_eq!(
            route(b"a\x1d1bc\n\x1d0d\x1d9e"),
            [
                (0, b"a".to_vec()),
                (1, b"bc\n".to_vec()),
                (0, b"d".to_vec()),
                (9, b"e".to_vec())
            ]
        );
    }

    #[test]
    fn nothing_typed_is_lost() {
        // A doubled escape is one escape; an escape before anything else passes both on.
        assert_eq!(route(b"\x1d\x1dx"), [(0, b"\x1dx".to_vec())]);
        assert_eq!(route(b"\x1dq"), [(0, b"\x1dq".to_vec())]);
        assert_eq!(route(b"\x1d\n"), [(0, b"\x1d\n".to_vec())]);
        // A lone escape waits for its second byte.
        let mut s = InputSwitch::new();
        assert_eq!(s.feed(ESCAPE), Typed::Pending);
        assert_eq!(s.feed(b'3'), Typed::SwitchTo(3));
        assert_eq!(s.feed(b'3'), Typed::Bytes([b'3', 0], 1));
    }
}

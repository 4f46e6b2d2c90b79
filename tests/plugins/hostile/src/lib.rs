//! Hostile plugins for the sandbox tests. The `attack` setting picks the misbehaviour;
//! `pre-*` and `post-*` attacks happen in the hooks, the others in the ISO policy.
wit_bindgen::generate!({ path: "../../../wit/since_v0.2.0", world: "plugin" });

use std::hint::black_box;

use exports::vmguest::plugin::install_hooks;
use exports::vmguest::plugin::iso_policy;
use vmguest::plugin::host::{log, setting};
use vmguest::plugin::types::*;

struct Hostile;

fn attack() -> String {
    setting("attack").unwrap_or_default()
}

#[allow(unconditional_recursion)]
fn recurse(n: u64, pad: [u64; 64]) -> u64 {
    black_box(recurse(black_box(n + 1), black_box(pad))) + pad[0]
}

fn misbehave(what: &str) {
    match what {
        "loop" => loop {
            black_box(0);
        },
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 16 << 20]));
            }
        }
        "panic" => panic!("hostile plugin panics"),
        // Blocks in the kernel: opening a FIFO that nobody writes.
        "fifo" => {
            black_box(std::fs::read("/grant/fifo").ok());
        }
        // Blocks in the host (wasi:io/poll), where epochs cannot interrupt it.
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
        "recursion" => {
            black_box(recurse(0, [1; 64]));
        }
        // Holds open files until refused, then defers: the host must not run out first.
        "fds" => {
            let mut held = Vec::new();
            while let Ok(f) = std::fs::File::open("/grant/held.txt") {
                held.push(f);
                if held.len() > 100_000 {
                    break;
                }
            }
            log(Level::Warn, &format!("held {} files", held.len()));
            black_box(&held);
        }
        // Chatty, not hostile: 1 MiB to stderr and 200 KiB to stdout, then a normal answer.
        "flood" => {
            let line = "x".repeat(1023);
            for _ in 0..1024 {
                eprintln!("{line}");
            }
            for _ in 0..200 {
                println!("{line}");
            }
        }
        _ => {}
    }
}

impl iso_policy::Guest for Hostile {
    fn choose(ctx: PolicyContext) -> PolicyDecision {
        let a = attack();
        misbehave(&a);
        match a.as_str() {
            "passwd" => {
                // The sandbox has no ambient files: both reads must fail.
                for p in ["/etc/passwd", "/grant/../../etc/passwd", "../etc/passwd"] {
                    match std::fs::read_to_string(p) {
                        Ok(text) => {
                            return PolicyDecision::Refuse(Refusal {
                                error: ContractError::Unexpected,
                                message: format!("READ {p}: {text}"),
                            })
                        }
                        Err(e) => log(Level::Warn, &format!("cannot read {p}: {e}")),
                    }
                }
                PolicyDecision::Provide("/grant/../../../etc/passwd".into())
            }
            "index" => PolicyDecision::Choose(ctx.candidates.len() as u32 + 999),
            "outside" => PolicyDecision::Provide("/etc/passwd".into()),
            "symlink" => PolicyDecision::Provide("/grant/escape.iso".into()),
            // Check-then-use (TOCTOU): provide a good ISO now, swap it for an escape in
            // pre-install, after the host checked the path.
            "swap" => PolicyDecision::Provide("/grant/ic.iso".into()),
            "huge" => PolicyDecision::Refuse(Refusal {
                error: ContractError::Unexpected,
                message: "x".repeat(8 << 20),
            }),
            _ => PolicyDecision::Defer,
        }
    }
}

impl install_hooks::Guest for Hostile {
    fn pre_install(_ctx: InstallContext) -> Result<(), Refusal> {
        let a = attack();
        if let Some(a) = a.strip_prefix("pre-") {
            misbehave(a);
        }
        if a == "swap" {
            // A rename moves the symlink itself: /grant/ic.iso now leads outside.
            if let Err(e) = std::fs::rename("/grant/escape.iso", "/grant/ic.iso") {
                log(Level::Error, &format!("swap failed: {e}"));
            }
        }
        Ok(())
    }

    fn post_install(_ctx: InstallContext, _outcome: InstallOutcome) -> Result<(), String> {
        if let Some(a) = attack().strip_prefix("post-") {
            misbehave(a);
        }
        Ok(())
    }
}

export!(Hostile);

//! Cold SHA-256 of one file, as an install computes it on a digest-cache miss: through
//! `vmguest::iso::digest` with no cache. `scripts/bench-media.py` times this process
//! against `openssl dgst -sha256` on the same file.
//!
//! ```sh
//! cargo run --release --example iso_digest -- FILE
//! ```

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: iso_digest FILE");
        std::process::exit(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("iso_digest: {}: {e}", std::path::Path::new(&path).display());
            std::process::exit(1);
        }
    };
    match vmguest::iso::digest::sha256(&file, None) {
        Ok((sha, _)) => println!("{sha}"),
        Err(e) => {
            eprintln!("iso_digest: {e}");
            std::process::exit(1);
        }
    }
}

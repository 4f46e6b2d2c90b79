//! The ISO reader and family identification on arbitrary bytes.
//!
//! The input is the image from sector 16 on: the first 16 sectors (the system area) are
//! never read, so leaving them out keeps the corpus small and the mutations useful.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut image = vec![0u8; 16 * 2048];
    image.extend_from_slice(data);
    let _ = vmguest::iso::inspect_bytes(&image);
});

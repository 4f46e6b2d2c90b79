//! The file version of a Windows executable, from its `VS_FIXEDFILEINFO` resource.
//!
//! Some families carry their version only in their installer (Hyper-V's `setup.exe`).
//! Rather than parse the PE resource tree, we look for the structure's signature,
//! `0xFEEF04BD`, which is followed by the structure version and then the file version
//! as two 32-bit words (`MS`, `LS`: four 16-bit numbers). Resources sit near the end of
//! the file, so callers pass its tail.

const SIGNATURE: [u8; 4] = 0xFEEF04BDu32.to_le_bytes();

pub fn file_version(bytes: &[u8]) -> Option<String> {
    let at = bytes.windows(4).rposition(|w| w == SIGNATURE)?;
    let word = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(at + off..at + off + 4)?.try_into().ok()?,
        ))
    };
    let (ms, ls) = (word(8)?, word(12)?);
    if ms == 0 && ls == 0 {
        return None;
    }
    Some(format!(
        "{}.{}.{}.{}",
        ms >> 16,
        ms & 0xFFFF,
        ls >> 16,
        ls & 0xFFFF
    ))
}

/// A stand-in for an executable with a version resource, for tests and fixtures.
pub fn fake_exe(version: [u16; 4]) -> Vec<u8> {
    let mut b = b"MZ fake PE for layout tests\0".to_vec();
    b.extend_from_slice(&SIGNATURE);
    b.extend_from_slice(&0x0001_0000u32.to_le_bytes());
    b.extend_from_slice(&((version[0] as u32) << 16 | version[1] as u32).to_le_bytes());
    b.extend_from_slice(&((version[2] as u32) << 16 | version[3] as u32).to_le_bytes());
    b.extend_from_slice(&[0u8; 32]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fixed_file_version() {
        assert_eq!(
            file_version(&fake_exe([6, 3, 9600, 18080])).as_deref(),
            Some("6.3.9600.18080")
        );
        assert_eq!(file_version(b"MZ no resources"), None);
        assert_eq!(file_version(&fake_exe([0, 0, 0, 0])), None);
        let truncated = fake_exe([1, 2, 3, 4]);
        assert_eq!(file_version(&truncated[..truncated.len() - 40]), None);
    }
}

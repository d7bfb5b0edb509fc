//! LEB128 variable-length integers, as the record codec and the plan outline write them.

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The bytes ended before the last byte of the varint.
    EndsEarly,
    /// The varint does not fit in 64 bits.
    Overflows,
}

/// Appends `v` to `out`.
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads the varint at `*pos` in `b`, moving `*pos` past it.
pub(crate) fn read(b: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = *b.get(*pos).ok_or(VarintError::EndsEarly)?;
        *pos += 1;
        if shift >= 64 {
            return Err(VarintError::Overflows);
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_bad_bytes() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put(&mut out, v);
            let mut pos = 0;
            assert_eq!(read(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
        }
        assert_eq!(read(&[0x80], &mut 0), Err(VarintError::EndsEarly));
        assert_eq!(read(&[0xff; 11], &mut 0), Err(VarintError::Overflows));
    }
}

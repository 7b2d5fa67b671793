//! The symbol versions an ELF executable needs from its shared libraries (its `.gnu.version_r`
//! section), and the highest `GLIBC_x.y` among them: the oldest glibc the binary starts on.
//!
//! Read from the file's bytes, without a tool, so that `cargo xtask dist` and the tests check a
//! binary the same way. Only 64-bit little-endian ELF (x86_64 Linux) is understood.

/// The newest glibc the portable binary may need, so that it starts on glibc 2.17 and later.
pub const MAX_GLIBC: [u32; 2] = [2, 17];
/// `SHT_GNU_verneed`: the section type of the versions needed from shared libraries.
const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
/// More sections or needed versions than this means a corrupt file, not a real binary.
const MAX_ENTRIES: usize = 65_536;

/// The version names (such as `GLIBC_2.17`) the executable `elf` needs, from every library.
pub fn needed_versions(elf: &[u8]) -> Result<Vec<String>, String> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF file".to_owned());
    }
    let section_offset = read_u64(elf, 0x28)? as usize;
    let entry_size = usize::from(read_u16(elf, 0x3a)?);
    let count = usize::from(read_u16(elf, 0x3c)?);
    if count > MAX_ENTRIES || entry_size < 64 {
        return Err(format!("implausible section table ({count} sections of {entry_size} bytes)"));
    }
    let section = |index: usize| section_offset.checked_add(index.checked_mul(entry_size)?);
    for index in 0..count {
        let header = section(index).ok_or("section table out of range")?;
        if read_u32(elf, header + 4)? == SHT_GNU_VERNEED {
            let strings = section(read_u32(elf, header + 40)? as usize).ok_or("string table out of range")?;
            let strings_at = read_u64(elf, strings + 24)? as usize;
            let entries = read_u32(elf, header + 44)? as usize;
            return read_verneed(elf, read_u64(elf, header + 24)? as usize, entries, strings_at);
        }
    }
    Ok(Vec::new())
}

/// Walks the `Elf64_Verneed` list at `offset` (`entries` libraries) and their `Elf64_Vernaux`
/// entries, naming each version from the string table at `strings`.
fn read_verneed(elf: &[u8], offset: usize, entries: usize, strings: usize) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut need = offset;
    for _ in 0..entries.min(MAX_ENTRIES) {
        let aux_count = usize::from(read_u16(elf, need + 2)?);
        let mut aux =
            need.checked_add(read_u32(elf, need + 8)? as usize).ok_or("version entry out of range")?;
        for _ in 0..aux_count.min(MAX_ENTRIES) {
            let name_at = strings.checked_add(read_u32(elf, aux + 8)? as usize).ok_or("name out of range")?;
            names.push(read_string(elf, name_at)?);
            aux = aux.checked_add(read_u32(elf, aux + 12)? as usize).ok_or("version entry out of range")?;
        }
        match read_u32(elf, need + 12)? {
            0 => break,
            next => need = need.checked_add(next as usize).ok_or("version entry out of range")?,
        }
    }
    Ok(names)
}

/// The highest `GLIBC_x.y[.z]` version in `names`, as its name and its numbers.
pub fn highest_glibc(names: &[String]) -> Option<(String, Vec<u32>)> {
    names.iter().filter_map(|name| Some((name.clone(), glibc_numbers(name)?))).max_by(|a, b| a.1.cmp(&b.1))
}

/// `GLIBC_2.17` as `[2, 17]`; `None` for other names (`GLIBC_PRIVATE`, `GCC_3.0`).
pub fn glibc_numbers(name: &str) -> Option<Vec<u32>> {
    let numbers = name.strip_prefix("GLIBC_")?;
    numbers.split('.').map(|part| part.parse().ok()).collect()
}

fn read_u16(elf: &[u8], at: usize) -> Result<u16, String> {
    Ok(u16::from_le_bytes(read_array(elf, at)?))
}

fn read_u32(elf: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(read_array(elf, at)?))
}

fn read_u64(elf: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from_le_bytes(read_array(elf, at)?))
}

fn read_array<const N: usize>(elf: &[u8], at: usize) -> Result<[u8; N], String> {
    let bytes = at.checked_add(N).and_then(|end| elf.get(at..end));
    bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("truncated ELF file: {N} bytes at offset {at} are past its end"))
}

/// The NUL-terminated string at `at`, at most 256 bytes.
fn read_string(elf: &[u8], at: usize) -> Result<String, String> {
    let rest = elf.get(at..).ok_or_else(|| format!("string at offset {at} is past the end"))?;
    let end = rest.iter().take(256).position(|&b| b == 0).ok_or("unterminated version name")?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

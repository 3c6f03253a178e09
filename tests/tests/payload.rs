//! A damaged kernel payload inside the stage is reported by the stage as such and ends in a
//! failure exit: never executed, never a hang.

use handoff::payload::{HEADER_LEN, Header, MAGIC};
use tests::{boot_image, expect_failure};

/// Offset of the embedded payload inside the EFI image: the occurrence of the magic number that
/// starts a valid header (the magic also appears as a constant in the stage's code or data).
fn find_payload(image: &[u8]) -> usize {
    (0..image.len() - HEADER_LEN)
        .filter(|&at| image[at..at + 8] == MAGIC)
        .find(|&at| {
            let len = u64::from_le_bytes(image[at + 8..at + 16].try_into().unwrap()) as usize;
            image
                .get(at..at + HEADER_LEN + len)
                .is_some_and(|p| Header::parse(p).is_ok())
        })
        .expect("embedded payload in the EFI image")
}

fn damaged(name: &str, damage: impl Fn(&mut Vec<u8>, usize)) -> std::path::PathBuf {
    let mut image = std::fs::read(tests::image()).unwrap();
    let at = find_payload(&image);
    damage(&mut image, at);
    let path = xtask::target_dir().join(format!("test-logs/{name}.efi"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, image).unwrap();
    path
}

#[test]
fn corrupted_kernel_is_reported() {
    // Flip bits in the middle of the compressed kernel: LZ4 decoding or the CRC-32 catches it.
    let efi = damaged("corrupt-payload", |img, at| {
        let len = u64::from_le_bytes(img[at + 8..at + 16].try_into().unwrap()) as usize;
        let mid = at + HEADER_LEN + len / 2;
        for b in &mut img[mid..mid + 16] {
            *b ^= 0x5a;
        }
    });
    let out = boot_image("corrupt-payload", efi, 1, "");
    expect_failure(&out, "stage: error: kernel payload is corrupted");
    assert!(
        !out.serial.contains("ready"),
        "a corrupted kernel ran:\n{}",
        out.serial
    );
}

#[test]
fn damaged_payload_header_is_reported() {
    let efi = damaged("bad-magic", |img, at| img[at + 3] ^= 0xff);
    let out = boot_image("bad-magic", efi, 1, "");
    expect_failure(&out, "stage: error: kernel payload has a bad magic number");
}

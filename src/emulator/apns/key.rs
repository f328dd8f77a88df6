//! The emulator's provider key: a P-256 key generated at start or read from `--key`, kept as
//! Apple hands it to developers (a `.p8`: PKCS#8 PEM), so the gateway's `key_file` can be
//! the file `--write-key` writes. Only its public half is used to verify tokens.

use std::io;
use std::path::Path;

use p256::SecretKey;
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};

/// A fresh key, like one created in Apple's developer account.
pub(super) fn generate() -> SecretKey {
    SecretKey::random(&mut OsRng)
}

/// Reads a `.p8` (PKCS#8 PEM, EC P-256), e.g. one `--write-key` wrote or Apple's download.
pub(super) fn read(path: &Path) -> io::Result<SecretKey> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading the provider key {}: {e}", path.display()),
        )
    })?;
    SecretKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the provider key {} is not a PKCS#8 PEM P-256 key (.p8): {e}",
                path.display()
            ),
        )
    })
}

/// The key as a `.p8`'s text.
pub(super) fn pem(key: &SecretKey) -> io::Result<String> {
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(io::Error::other)?;
    Ok(pem.as_str().to_owned())
}

/// Writes the `.p8` readable by its owner only, as a private key should be.
pub(super) fn write(path: &Path, pem: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("writing the key to {}: {e}", path.display()),
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(pem.as_bytes()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_reads_back_as_the_same_key_and_only_its_owner_may_read_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("AuthKey_EMUKEY0001.p8");
        let key = generate();
        let text = pem(&key).expect("PEM");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        write(&path, &text).expect("writing");
        assert_eq!(read(&path).expect("reading").to_bytes(), key.to_bytes());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_file_that_is_no_p8_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("not-a-key.p8");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("writing");
        let e = read(&path).expect_err("a certificate is no key");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("not-a-key.p8"), "{e}");
        let missing = read(&dir.path().join("missing.p8")).expect_err("no file");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}

//! The development default: its config text and the state dir whose secrets it generates.

use super::*;

/// Where the development default keeps its state and generated secrets.
pub const DEV_STATE_DIR: &str = "./switchboard-data";

/// The embedded development default; paths are relative to [`DEV_STATE_DIR`].
pub const DEV_DEFAULT: &str = r#"
dev = true

[http]
listen = "127.0.0.1:8080"

[turn]
listen = ["127.0.0.1:3478"]
relay_ip = "127.0.0.1"
secret_file = "turn-secret"

[auth]
jwt_secret_file = "jwt-secret"
admin_token_file = "admin-token"
open_conversations = true

[store]
path = "switchboard.db"
"#;

/// The secrets the development default generates in its state dir, with their keys.
pub(super) const DEV_SECRETS: [(&str, &str); 3] = [
    ("turn-secret", "turn.secret_file"),
    ("jwt-secret", "auth.jwt_secret_file"),
    ("admin-token", "auth.admin_token_file"),
];

/// Creates the development state dir and generates its missing secrets.
pub(super) fn prepare_state_dir(dir: &Path) -> Result<Vec<Warning>, ConfigError> {
    let shown = dir.display().to_string();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ConfigError::new(&shown, format!("cannot create the state dir: {e}")))?;
    let mut warnings = Vec::new();
    let mode = fs::metadata(dir)
        .map_err(|e| ConfigError::new(&shown, e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        warnings.push(Warning::new(
            shown,
            format!(
                "the state dir holds secrets but has mode {:o}; run chmod 700 on it",
                mode & 0o777
            ),
        ));
    }
    for (name, key) in DEV_SECRETS {
        let path = dir.join(name);
        ensure_secret_file(&path).map_err(|e| {
            ConfigError::new(key, format!("cannot create `{}`: {e}", path.display()))
        })?;
    }
    Ok(warnings)
}

/// Writes 32 random bytes, base64, to `path` (mode 0600) unless it exists.
///
/// The file appears atomically (written aside, then hard-linked into place), so two processes
/// starting at once agree on one secret and neither reads a half-written file.
pub(super) fn ensure_secret_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // left over by an earlier process with our pid
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()), // another process won
        other => other,
    }
}

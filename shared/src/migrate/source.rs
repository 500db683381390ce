//! Reading migration folders and computing their checksums.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{MigrateError, Op};

#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub up: Vec<Op>,
    pub down: Vec<Op>,
    /// SHA-256 over both files: a changed `down` matters as much as a changed `up`.
    pub checksum: String,
}

impl Migration {
    /// The folder name, e.g. `0002_state_ttl`: how every message names a migration.
    pub fn id(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }

    /// Parses one migration from its folder name and the text of its two files.
    pub fn parse(folder: &str, up: &str, down: &str) -> Result<Self, MigrateError> {
        let bad = |reason: String| MigrateError::Parse {
            file: folder.to_owned(),
            reason,
        };
        let (digits, name) = folder
            .split_once('_')
            .ok_or_else(|| bad("folder name must look like 0001_name".into()))?;
        let version: u32 = digits
            .parse()
            .map_err(|_| bad(format!("{digits:?} is not a version number")))?;
        if version == 0 || name.is_empty() {
            return Err(bad(
                "version must be at least 1 and the name non-empty".into()
            ));
        }
        let ops = |file: &str, text: &str| -> Result<Vec<Op>, MigrateError> {
            let ops: Vec<Op> = serde_norway::from_str(text).map_err(|e| MigrateError::Parse {
                file: format!("{folder}/{file}"),
                reason: e.to_string(),
            })?;
            for op in &ops {
                op.validate().map_err(|reason| MigrateError::Parse {
                    file: format!("{folder}/{file}"),
                    reason,
                })?;
            }
            Ok(ops)
        };
        let mut hasher = Sha256::new();
        hasher.update(up.as_bytes());
        hasher.update([0u8]);
        hasher.update(down.as_bytes());
        Ok(Self {
            version,
            name: name.to_owned(),
            up: ops("up.yaml", up)?,
            down: ops("down.yaml", down)?,
            checksum: hex::encode(hasher.finalize()),
        })
    }
}

/// Loads every `NNNN_name/` folder under `dir`, sorted by version; versions must be unique.
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    let io = |path: &Path, e: std::io::Error| MigrateError::Parse {
        file: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        if entry
            .file_type()
            .map_err(|e| io(&entry.path(), e))?
            .is_dir()
        {
            let path = entry.path();
            let read =
                |f: &str| std::fs::read_to_string(path.join(f)).map_err(|e| io(&path.join(f), e));
            folders.push((
                entry.file_name().to_string_lossy().into_owned(),
                read("up.yaml")?,
                read("down.yaml")?,
            ));
        }
    }
    from_files(folders)
}

/// Builds the sorted, checked migration list from (folder, up, down) texts, from disk or embedded.
pub fn from_files(
    folders: impl IntoIterator<Item = (String, String, String)>,
) -> Result<Vec<Migration>, MigrateError> {
    let mut migrations = folders
        .into_iter()
        .map(|(folder, up, down)| Migration::parse(&folder, &up, &down))
        .collect::<Result<Vec<_>, _>>()?;
    migrations.sort_by_key(|m| m.version);
    if let Some(pair) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(MigrateError::Parse {
            file: pair[1].id(),
            reason: format!(
                "version {} is also used by {}",
                pair[0].version,
                pair[0].id()
            ),
        });
    }
    Ok(migrations)
}

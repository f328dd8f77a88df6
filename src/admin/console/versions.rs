//! Earlier versions of a port's script, kept on disk beside it as
//! `<script>.versions/<unix ms>.rhai`: listing and reading them, saving a script so
//! that the file it replaces becomes a version, and a version's diff page. Only this
//! file writes a script from the console or touches its versions directory.

use std::path::{Path, PathBuf};

use askama::Template;
use hyper::StatusCode;

use super::{Chrome, error_page, render};
use crate::admin::auth::Session;
use crate::admin::{AdminState, Reply};
use crate::clock::now_ms;
use crate::script::format_local;

/// A kept version: its file name (`<unix ms>.rhai`) and when it was replaced.
pub(super) struct Version {
    pub name: String,
    pub when: String,
}

/// Earlier versions live beside the script: `<script>.versions/<unix ms>.rhai`.
fn versions_dir(script: &Path) -> PathBuf {
    let mut name = script
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".versions");
    script.with_file_name(name)
}

/// When a version was replaced, from its name, in `zone` (empty if the name is no time).
fn replaced_at(name: &str, zone: chrono_tz::Tz) -> String {
    name.trim_end_matches(".rhai")
        .parse::<i64>()
        .map(|ms| format_local(ms, zone, "%Y-%m-%d %H:%M:%S"))
        .unwrap_or_default()
}

/// The script's kept versions, newest first.
pub(super) fn list_versions(script: &Path, zone: chrono_tz::Tz) -> Vec<Version> {
    let mut names: Vec<String> = std::fs::read_dir(versions_dir(script))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".rhai"))
                .collect()
        })
        .unwrap_or_default();
    names.sort_by(|a, b| b.cmp(a));
    names
        .into_iter()
        .map(|name| Version {
            when: replaced_at(&name, zone),
            name,
        })
        .collect()
}

/// The text of the kept version `name`; `None` unless `name` is a version's file name
/// (never a path: no `/`, no `..`) and that file can be read.
pub(super) fn read_version(script: &Path, name: &str) -> Option<String> {
    if !name.ends_with(".rhai") || name.contains('/') || name.contains("..") {
        return None;
    }
    std::fs::read_to_string(versions_dir(script).join(name)).ok()
}

/// Keep the current file as a version, then replace it atomically (write + rename).
pub(super) fn save_script(script: &Path, source: &str, keep: usize) -> std::io::Result<()> {
    let dir = versions_dir(script);
    std::fs::create_dir_all(&dir)?;
    if script.exists() {
        std::fs::copy(script, dir.join(format!("{}.rhai", now_ms())))?;
    }
    let tmp = script.with_extension(format!("rhai.saving-{}", rand::random::<u64>()));
    std::fs::write(&tmp, source)?;
    std::fs::rename(&tmp, script)?;
    let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(keep);
    for path in &old[..excess] {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

struct DiffLine {
    kind: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "version.html")]
struct VersionPage {
    chrome: Option<Chrome>,
    port: String,
    version: String,
    when: String,
    lines: Vec<DiffLine>,
}

/// `GET /scripts/{port}/versions/{version}`: what changed from that version to the
/// script on disk now.
pub(super) async fn page(
    state: &AdminState,
    session: &Session,
    port: &str,
    version: &str,
) -> Reply {
    let config = state.config();
    let Some(port_config) = config.port(port) else {
        return error_page(
            Some(session),
            StatusCode::NOT_FOUND,
            &format!("No port named {port}."),
        );
    };
    let path = config.resolve(&port_config.script);
    let Some(old) = read_version(&path, version) else {
        return error_page(Some(session), StatusCode::NOT_FOUND, "No such version.");
    };
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&old, &current);
    let lines = diff
        .iter_all_changes()
        .map(|change| DiffLine {
            kind: match change.tag() {
                similar::ChangeTag::Delete => "del",
                similar::ChangeTag::Insert => "ins",
                similar::ChangeTag::Equal => "same",
            },
            text: change.to_string_lossy().trim_end_matches('\n').to_owned(),
        })
        .collect();
    render(&VersionPage {
        chrome: Some(Chrome::new(session, "scripts")),
        port: port.to_owned(),
        version: version.to_owned(),
        when: replaced_at(version, config.zone()),
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_live_beside_the_script() {
        assert_eq!(
            versions_dir(Path::new("/etc/pushgate/route.rhai")),
            Path::new("/etc/pushgate/route.rhai.versions")
        );
    }

    #[test]
    fn a_version_name_is_never_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("route.rhai");
        std::fs::write(dir.path().join("secret.rhai"), "secret").unwrap();
        std::fs::create_dir_all(versions_dir(&script)).unwrap();
        std::fs::write(versions_dir(&script).join("1.rhai"), "old").unwrap();
        assert_eq!(read_version(&script, "1.rhai").as_deref(), Some("old"));
        assert_eq!(read_version(&script, "../secret.rhai"), None);
        assert_eq!(read_version(&script, "..secret.rhai"), None);
        assert_eq!(read_version(&script, "1.txt"), None);
        assert_eq!(read_version(&script, "2.rhai"), None);
    }

    #[test]
    fn saving_keeps_the_replaced_script_and_at_most_keep_versions() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("route.rhai");
        save_script(&script, "first", 2).unwrap();
        assert!(list_versions(&script, chrono_tz::UTC).is_empty());
        for source in ["second", "third", "fourth"] {
            // Versions are named by the millisecond they were replaced in.
            std::thread::sleep(std::time::Duration::from_millis(2));
            save_script(&script, source, 2).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&script).unwrap(), "fourth");
        let kept = list_versions(&script, chrono_tz::UTC);
        let texts: Vec<String> = kept
            .iter()
            .filter_map(|v| read_version(&script, &v.name))
            .collect();
        assert_eq!(texts, ["third", "second"]);
    }
}

//! The revision archive: every rule-set revision that goes live, stored content-addressed, with
//! when it went live and when it was replaced.
//!
//! Why it exists: a revision is a content hash of the rule files, and the files change. To
//! replay a decision made months ago with exactly the rules that made it, the files of every
//! revision that ever went live are kept: each file once, keyed by the SHA-256 of its text
//! (`blobs`), and per revision a manifest naming each file's role, path and hash (`revisions`).
//! `revision_periods` keeps each period a revision was live, so "which rules were live on the
//! 3rd of March?" has an answer, and consecutive manifests say what changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RecordError;
use super::store::{ARCHIVE_LOCK, Db, RevisionPeriod, Val, from_micros, micros, sha256};
use crate::engine::{RuleSources, SourceFile};

/// One file of an archived revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// What the file is to the rule set: `metadata`, `script`, `shared`, `calendar`,
    /// `actions`, `vocabulary` or `case`.
    pub role: String,
    /// Path relative to the rules folder.
    pub path: String,
    /// SHA-256 of its text (hex): its key in `blobs`.
    pub sha256: String,
}

/// The manifest of `sources`: every file with its role and hash.
pub fn manifest(sources: &RuleSources) -> Vec<(ManifestEntry, &SourceFile)> {
    let mut out = Vec::new();
    let mut all: Vec<(String, &SourceFile)> = vec![
        ("metadata".to_string(), &sources.metadata),
        ("calendar".to_string(), &sources.calendar),
        ("actions".to_string(), &sources.actions),
        ("vocabulary".to_string(), &sources.vocabulary),
    ];
    all.extend(sources.scripts.iter().map(|f| ("script".to_string(), f)));
    all.extend(sources.shared.iter().map(|f| ("shared".to_string(), f)));
    all.extend(sources.cases.iter().map(|f| ("case".to_string(), f)));
    for (role, f) in all {
        out.push((ManifestEntry { role, path: f.path.clone(), sha256: sha256(&f.text) }, f));
    }
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    out
}

/// Stores `sources` (revision `revision`) and records that it went live at `live_from`,
/// closing the period of the revision it replaced. Inside the caller's transaction. Going live
/// again while already live (another replica, a restart) changes nothing.
pub fn archive(db: &mut Db, sources: &RuleSources, revision: &str, live_from: DateTime<Utc>) -> Result<(), RecordError> {
    db.sql.lock(ARCHIVE_LOCK)?;
    let entries = manifest(sources);
    for (entry, file) in &entries {
        db.sql.execute("INSERT INTO blobs (sha256, content) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING", &[
            Val::Text(Some(entry.sha256.clone())),
            Val::Text(Some(file.text.clone())),
        ])?;
    }
    let manifest: Vec<&ManifestEntry> = entries.iter().map(|(e, _)| e).collect();
    let manifest = serde_json::to_string(&manifest).map_err(|e| RecordError::Unavailable(e.to_string()))?;
    let p = || Val::Text(Some(sources.id.clone()));
    let r = || Val::Text(Some(revision.to_string()));
    db.sql.execute(
        "INSERT INTO revisions (partnership, revision, manifest, archived_at) VALUES ($1, $2, $3, $4) ON CONFLICT (partnership, revision) DO NOTHING",
        &[p(), r(), Val::Text(Some(manifest)), Val::Int(Some(micros(crate::clock::now())))],
    )?;
    let open = db.sql.query("SELECT revision FROM revision_periods WHERE partnership = $1 AND replaced_at IS NULL", &[p()])?;
    if open.iter().any(|row| row[0].as_text() == Some(revision)) {
        return Ok(());
    }
    let at = Val::Int(Some(micros(live_from)));
    db.sql.execute("UPDATE revision_periods SET replaced_at = $1 WHERE partnership = $2 AND replaced_at IS NULL", &[at.clone(), p()])?;
    db.sql.execute("INSERT INTO revision_periods (partnership, revision, live_from) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", &[p(), r(), at])?;
    Ok(())
}

fn read_manifest(db: &mut Db, partnership: &str, revision: &str) -> Result<Option<Vec<ManifestEntry>>, RecordError> {
    let rows = db.sql.query("SELECT manifest FROM revisions WHERE partnership = $1 AND revision = $2", &[
        Val::Text(Some(partnership.to_string())),
        Val::Text(Some(revision.to_string())),
    ])?;
    let Some(text) = rows.first().and_then(|r| r[0].as_text()) else { return Ok(None) };
    serde_json::from_str(text).map(Some).map_err(|e| RecordError::Unavailable(format!("a revision manifest cannot be read: {e}")))
}

/// The sources of an archived revision, rebuilt from its manifest and blobs (checked against
/// the revision hash); `None` if it is not in the archive.
pub fn sources(db: &mut Db, partnership: &str, revision: &str) -> Result<Option<RuleSources>, RecordError> {
    let Some(manifest) = read_manifest(db, partnership, revision)? else { return Ok(None) };
    let mut files: BTreeMap<String, Vec<SourceFile>> = BTreeMap::new();
    for e in &manifest {
        let rows = db.sql.query("SELECT content FROM blobs WHERE sha256 = $1", &[Val::Text(Some(e.sha256.clone()))])?;
        let text = rows
            .first()
            .and_then(|r| r[0].as_text())
            .ok_or_else(|| RecordError::Unavailable(format!("archived file {} ({}) is missing", e.path, e.sha256)))?
            .to_string();
        files.entry(e.role.clone()).or_default().push(SourceFile { path: e.path.clone(), text });
    }
    let mut one = |role: &str| -> Result<SourceFile, RecordError> {
        files.get_mut(role).and_then(Vec::pop).ok_or_else(|| RecordError::Unavailable(format!("the archived revision {revision} has no {role} file")))
    };
    let metadata = one("metadata")?;
    let calendar = one("calendar")?;
    let actions = one("actions")?;
    let vocabulary = one("vocabulary")?;
    let sources = RuleSources {
        id: partnership.to_string(),
        metadata,
        calendar,
        actions,
        vocabulary,
        scripts: files.remove("script").unwrap_or_default(),
        shared: files.remove("shared").unwrap_or_default(),
        cases: files.remove("case").unwrap_or_default(),
    };
    if sources.revision() != revision {
        return Err(RecordError::Unavailable(format!("the archived files of revision {revision} hash to {}: the archive is damaged", sources.revision())));
    }
    Ok(Some(sources))
}

/// Every period a revision of `partnership` was live, oldest first, each with what changed
/// since the one before and how many decisions were recorded with it.
pub fn revisions(db: &mut Db, partnership: &str) -> Result<Vec<RevisionPeriod>, RecordError> {
    let p = Val::Text(Some(partnership.to_string()));
    let rows = db.sql.query("SELECT revision, live_from, replaced_at FROM revision_periods WHERE partnership = $1 ORDER BY live_from, revision", &[p.clone()])?;
    let mut out = Vec::new();
    let mut previous: Option<BTreeMap<String, String>> = None;
    for row in rows {
        let revision = row[0].as_text().unwrap_or_default().to_string();
        let files: BTreeMap<String, String> =
            read_manifest(db, partnership, &revision)?.unwrap_or_default().into_iter().map(|e| (e.path, e.sha256)).collect();
        let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(prev) = &previous {
            for (path, hash) in &files {
                match prev.get(path) {
                    None => added.push(path.clone()),
                    Some(h) if h != hash => changed.push(path.clone()),
                    Some(_) => {}
                }
            }
            removed = prev.keys().filter(|k| !files.contains_key(*k)).cloned().collect();
        }
        let decisions = db
            .sql
            .query("SELECT COUNT(*) FROM decisions WHERE partnership = $1 AND revision = $2", &[p.clone(), Val::Text(Some(revision.clone()))])?
            .first()
            .and_then(|r| r[0].as_int())
            .unwrap_or_default();
        out.push(RevisionPeriod {
            revision,
            live_from: from_micros(row[1].as_int().unwrap_or_default()),
            replaced_at: row[2].as_int().map(from_micros),
            added,
            removed,
            changed,
            decisions,
        });
        previous = Some(files);
    }
    Ok(out)
}

//! One schema, two databases: the record's tables, its migrations and every query.
//!
//! Why it is built this way: SQLite (embedded, the default) and PostgreSQL (several replicas)
//! must hold exactly the same record, so the SQL is written once, in the portable subset both
//! speak (`TEXT`, `BIGINT`, `INSERT … ON CONFLICT`, numbered `$n` parameters in order of first
//! use), over the small [`Sql`] trait each database implements. Times are `BIGINT`
//! microseconds since the Unix epoch (UTC), so they sort and compare the same in both.
//!
//! Migrations are numbered and recorded in `record_migrations`; every start applies the ones
//! not yet applied, each in its own transaction. On PostgreSQL the migration (and archive)
//! transactions take an advisory lock, so replicas starting together do not race.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::{DecisionRecord, RecordError, RefusalKey, Target};

/// A value going into or coming out of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// `TEXT` (or `NULL`).
    Text(Option<String>),
    /// `BIGINT` (or `NULL`).
    Int(Option<i64>),
}

impl Val {
    fn text(s: impl Into<String>) -> Val {
        Val::Text(Some(s.into()))
    }
    fn int(i: i64) -> Val {
        Val::Int(Some(i))
    }
    /// As text (`None` for `NULL` or a number).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Val::Text(s) => s.as_deref(),
            Val::Int(_) => None,
        }
    }
    /// As a number (`None` for `NULL` or text).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => *i,
            Val::Text(_) => None,
        }
    }
}

/// The little a database must do for the record.
pub trait Sql: Send {
    /// Runs one statement with parameters; the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, RecordError>;
    /// Runs one query with parameters; its rows.
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, RecordError>;
    /// Runs statements without parameters (schema changes, `BEGIN`, `COMMIT`).
    fn batch(&mut self, sql: &str) -> Result<(), RecordError>;
    /// Starts a write transaction.
    fn begin(&mut self) -> Result<(), RecordError>;
    /// Within a transaction, waits for the record-wide lock `key` (PostgreSQL advisory lock;
    /// SQLite's write transaction already excludes every other writer).
    fn lock(&mut self, key: i64) -> Result<(), RecordError>;
}

fn unavailable(e: impl std::fmt::Display) -> RecordError {
    RecordError::Unavailable(e.to_string())
}

// ------------------------------------------------------------------------------------------
// SQLite
// ------------------------------------------------------------------------------------------

struct Sqlite(rusqlite::Connection);

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Val::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Int(Some(i)) => ToSqlOutput::Owned(Value::Integer(*i)),
            Val::Text(None) | Val::Int(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

impl Sqlite {
    fn open(path: &std::path::Path) -> Result<Sqlite, RecordError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(path).map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        // WAL: readers do not block the writer. FULL: a commit is on disk before it returns,
        // which is what "recorded before it is returned" means (group commit shares the fsync).
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(unavailable)?;
        Ok(Sqlite(conn))
    }
}

impl Sql for Sqlite {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, RecordError> {
        let mut st = self.0.prepare_cached(sql).map_err(unavailable)?;
        st.execute(rusqlite::params_from_iter(params.iter())).map(|n| n as u64).map_err(unavailable)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, RecordError> {
        use rusqlite::types::ValueRef;
        let mut st = self.0.prepare_cached(sql).map_err(unavailable)?;
        let n = st.column_count();
        let rows = st
            .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                (0..n)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => Val::Text(None),
                            ValueRef::Integer(v) => Val::Int(Some(v)),
                            ValueRef::Real(v) => Val::Int(Some(v as i64)),
                            ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(Some(String::from_utf8_lossy(t).into_owned())),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Val>>>()
            })
            .map_err(unavailable)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(unavailable)
    }

    fn batch(&mut self, sql: &str) -> Result<(), RecordError> {
        self.0.execute_batch(sql).map_err(unavailable)
    }

    fn begin(&mut self) -> Result<(), RecordError> {
        self.batch("BEGIN IMMEDIATE")
    }

    fn lock(&mut self, _key: i64) -> Result<(), RecordError> {
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// PostgreSQL
// ------------------------------------------------------------------------------------------

struct Pg {
    client: postgres::Client,
    statements: std::collections::HashMap<String, postgres::Statement>,
}

impl Pg {
    fn open(url: &str) -> Result<Pg, RecordError> {
        let client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(Pg { client, statements: Default::default() })
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, RecordError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(unavailable)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn pg_params(params: &[Val]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|v| match v {
            Val::Text(s) => s as &(dyn postgres::types::ToSql + Sync),
            Val::Int(i) => i as &(dyn postgres::types::ToSql + Sync),
        })
        .collect()
}

impl Sql for Pg {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, RecordError> {
        let st = self.statement(sql)?;
        self.client.execute(&st, &pg_params(params)).map_err(unavailable)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, RecordError> {
        use postgres::types::Type;
        let st = self.statement(sql)?;
        let rows = self.client.query(&st, &pg_params(params)).map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let ty = row.columns()[i].type_();
                        Ok(if *ty == Type::INT8 {
                            Val::Int(row.try_get::<_, Option<i64>>(i).map_err(unavailable)?)
                        } else if *ty == Type::INT4 {
                            Val::Int(row.try_get::<_, Option<i32>>(i).map_err(unavailable)?.map(i64::from))
                        } else {
                            Val::Text(row.try_get::<_, Option<String>>(i).map_err(unavailable)?)
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), RecordError> {
        self.client.batch_execute(sql).map_err(unavailable)
    }

    fn begin(&mut self) -> Result<(), RecordError> {
        self.batch("BEGIN")
    }

    fn lock(&mut self, key: i64) -> Result<(), RecordError> {
        self.query("SELECT CAST(pg_advisory_xact_lock($1) AS TEXT)", &[Val::int(key)]).map(|_| ())
    }
}

// ------------------------------------------------------------------------------------------
// The schema
// ------------------------------------------------------------------------------------------

/// Advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x00c0_de13;
/// Advisory lock held while archiving a revision (so replicas agree on lifetimes).
pub(super) const ARCHIVE_LOCK: i64 = 0x00c0_de14;

/// The migrations, in order: (version, name, statements). Never edit one that has shipped; add
/// the next.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "decision record, refusal counts, revision archive",
        "
CREATE TABLE decisions (
    decision_id   TEXT PRIMARY KEY,
    partnership   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    revision      TEXT NOT NULL,
    decided_at    BIGINT NOT NULL,
    today         TEXT NOT NULL,
    case_ref_hash TEXT,
    caller        TEXT NOT NULL,
    facts         TEXT NOT NULL,
    decision      TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (decided_at, decision_id);
CREATE INDEX decisions_by_case_ref ON decisions (case_ref_hash);
CREATE TABLE refusals (
    day         TEXT NOT NULL,
    partnership TEXT NOT NULL,
    kind        TEXT NOT NULL,
    code        TEXT NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (day, partnership, kind, code)
);
CREATE TABLE blobs (
    sha256  TEXT PRIMARY KEY,
    content TEXT NOT NULL
);
CREATE TABLE revisions (
    partnership TEXT NOT NULL,
    revision    TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    archived_at BIGINT NOT NULL,
    PRIMARY KEY (partnership, revision)
);
CREATE TABLE revision_periods (
    partnership TEXT NOT NULL,
    revision    TEXT NOT NULL,
    live_from   BIGINT NOT NULL,
    replaced_at BIGINT,
    PRIMARY KEY (partnership, live_from, revision)
);
",
    ),
    (
        2,
        "shared decision texts",
        "
CREATE TABLE decision_texts (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
",
    ),
];

/// Microseconds since the Unix epoch.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Back from microseconds since the Unix epoch.
pub fn from_micros(m: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(m).single().unwrap_or_default()
}

/// A filter for [`Db::list`]: every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Partnership id.
    pub partnership: Option<String>,
    /// Decision kind.
    pub kind: Option<String>,
    /// Outcome code.
    pub outcome: Option<String>,
    /// Keyed hash of the `case_ref` (hash it with [`super::CaseRefKey::hash`] first).
    pub case_ref_hash: Option<String>,
    /// Decided at or after.
    pub after: Option<DateTime<Utc>>,
    /// Decided before.
    pub before: Option<DateTime<Utc>>,
}

/// One page of decisions, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The decisions.
    pub records: Vec<DecisionRecord>,
    /// The token for the next page (`None` on the last).
    pub next: Option<String>,
}

/// One period a revision was live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RevisionPeriod {
    /// The revision.
    pub revision: String,
    /// When it went live.
    pub live_from: DateTime<Utc>,
    /// When another revision replaced it (`None` while live).
    pub replaced_at: Option<DateTime<Utc>>,
    /// Files added since the revision before it.
    pub added: Vec<String>,
    /// Files removed since the revision before it.
    pub removed: Vec<String>,
    /// Files changed since the revision before it.
    pub changed: Vec<String>,
    /// Decisions recorded with it.
    pub decisions: i64,
}

/// A connection to the record, with every query the record makes.
pub struct Db {
    pub(super) sql: Box<dyn Sql>,
    /// Shared texts known to be committed (not inserted again).
    known_texts: std::collections::HashSet<String>,
    /// Shared texts inserted by the open transaction (known once it commits).
    pending_texts: std::collections::HashSet<String>,
    /// Shared texts read, parsed.
    text_cache: std::collections::HashMap<String, serde_json::Value>,
}

/// Most shared texts remembered (written or read) per connection before the memory is cleared.
const TEXTS_REMEMBERED: usize = 50_000;

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

/// Most decisions one `INSERT` statement carries.
const ROWS_PER_INSERT: usize = 64;

const COLUMNS: &str = "decision_id, decided_at, today, facts, decision, caller, case_ref_hash";

/// The `INSERT` for `n` decisions (`n` one of [`ROWS_PER_INSERT`], 8 or 1), built once.
fn insert_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    let [big, eight, one] = SQL.get_or_init(|| {
        let make = |n: usize| {
            let rows: Vec<String> =
                (0..n).map(|r| format!("({})", (1..=Row::COLUMNS).map(|c| format!("${}", r * Row::COLUMNS + c)).collect::<Vec<_>>().join(", "))).collect();
            format!(
                "INSERT INTO decisions (decision_id, partnership, kind, outcome, revision, decided_at, today, case_ref_hash, caller, facts, decision) \
                 VALUES {} ON CONFLICT (decision_id) DO NOTHING",
                rows.join(", ")
            )
        };
        [make(ROWS_PER_INSERT), make(8), make(1)]
    });
    match n {
        ROWS_PER_INSERT => big,
        8 => eight,
        _ => one,
    }
}

/// One decision as the `decisions` table holds it: every column already encoded (the facts and
/// the decision as JSON text), so writing it is only binding values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    decision_id: String,
    partnership: String,
    kind: String,
    outcome: String,
    revision: String,
    decided_at: i64,
    today: String,
    case_ref_hash: Option<String>,
    caller: String,
    facts: String,
    decision: String,
    /// The shared texts `decision` refers to: (id, text).
    texts: Vec<(String, String)>,
}

/// The parts of a decision kept once in `decision_texts` and referred to by id: the rules'
/// wording, the same in every decision that takes the same path through them.
const SHARED_FIELDS: [&str; 4] = ["summary", "reasons", "actions", "details"];

/// A part shorter than this (as JSON) stays in the row: a reference would not be shorter.
const SHARED_MIN_LEN: usize = 64;

/// The key under which a stored decision lists its shared parts: `{"reasons": "<id>", …}`.
const SHARED_KEY: &str = "$texts";

/// SHA-256 of `text`, in hex: the key of content-addressed text (archive blobs, shared texts).
pub(super) fn sha256(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A shared text's id: the first 128 bits of its SHA-256, in hex.
fn text_id(text: &str) -> String {
    let mut id = sha256(text);
    id.truncate(32);
    id
}

impl Row {
    const COLUMNS: usize = 11;

    /// Encodes `r` for the `decisions` table.
    pub fn encode(r: &DecisionRecord) -> Result<Row, RecordError> {
        let d = &r.decision;
        let (decision, texts) = Row::split(d)?;
        Ok(Row {
            decision_id: r.decision_id.clone(),
            partnership: d.partnership.clone(),
            kind: d.kind.clone(),
            outcome: d.outcome.clone(),
            revision: d.rules_revision.clone(),
            decided_at: micros(r.decided_at),
            today: r.today.format("%Y-%m-%d").to_string(),
            case_ref_hash: r.case_ref_hash.clone(),
            caller: r.caller.clone(),
            facts: r.facts.to_string(),
            decision,
            texts,
        })
    }

    /// The decision as stored: its wording (summary, reasons, actions, details) moved out to
    /// shared texts, so a row holds little more than the facts and the references. The reasons
    /// of a path through the rules are the same text in every decision that takes it; written
    /// once instead of in every row, the record takes a third of the disk (docs/record.md).
    fn split(d: &crate::model::Decision) -> Result<(String, Vec<(String, String)>), RecordError> {
        let mut value = serde_json::to_value(d).map_err(unavailable)?;
        let mut texts = Vec::new();
        if let Some(obj) = value.as_object_mut() {
            let mut refs = serde_json::Map::new();
            for field in SHARED_FIELDS {
                let Some(part) = obj.get(field) else { continue };
                let text = part.to_string();
                if text.len() < SHARED_MIN_LEN {
                    continue;
                }
                obj.remove(field);
                let id = text_id(&text);
                refs.insert(field.to_string(), serde_json::Value::String(id.clone()));
                texts.push((id, text));
            }
            if !refs.is_empty() {
                obj.insert(SHARED_KEY.to_string(), serde_json::Value::Object(refs));
            }
        }
        Ok((value.to_string(), texts))
    }

    fn params(&self, out: &mut Vec<Val>) {
        out.extend([
            Val::text(&self.decision_id),
            Val::text(&self.partnership),
            Val::text(&self.kind),
            Val::text(&self.outcome),
            Val::text(&self.revision),
            Val::int(self.decided_at),
            Val::text(&self.today),
            Val::Text(self.case_ref_hash.clone()),
            Val::text(&self.caller),
            Val::text(&self.facts),
            Val::text(&self.decision),
        ]);
    }
}

fn bad(what: &str, e: &dyn std::fmt::Display) -> RecordError {
    RecordError::Unavailable(format!("a recorded {what} cannot be read: {e}"))
}

impl Db {
    /// Opens the record at `target` and applies any migration not yet applied.
    pub fn open(target: &Target) -> Result<Db, RecordError> {
        let sql: Box<dyn Sql> = match target {
            Target::Sqlite(p) => Box::new(Sqlite::open(p)?),
            Target::Postgres(url) => Box::new(Pg::open(url)?),
        };
        let mut db = Db { sql, known_texts: Default::default(), pending_texts: Default::default(), text_cache: Default::default() };
        db.migrate()?;
        Ok(db)
    }

    /// Runs `f` in a write transaction: committed if it succeeds, rolled back if not.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T, RecordError>) -> Result<T, RecordError> {
        self.sql.begin()?;
        self.pending_texts.clear();
        let result = f(self).and_then(|v| self.sql.batch("COMMIT").map(|()| v));
        match result {
            Ok(v) => {
                if self.known_texts.len() + self.pending_texts.len() > TEXTS_REMEMBERED {
                    self.known_texts.clear();
                }
                self.known_texts.extend(self.pending_texts.drain());
                Ok(v)
            }
            Err(e) => {
                self.pending_texts.clear();
                let _ = self.sql.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Rows of [`COLUMNS`] back into records, their shared texts put back in place.
    fn records(&mut self, rows: &[Vec<Val>]) -> Result<Vec<DecisionRecord>, RecordError> {
        let mut decisions = Vec::with_capacity(rows.len());
        let mut wanted = Vec::new();
        for row in rows {
            let stored: serde_json::Value = serde_json::from_str(row.get(4).and_then(Val::as_text).unwrap_or_default()).map_err(|e| bad("decision", &e))?;
            if let Some(refs) = stored.get(SHARED_KEY).and_then(serde_json::Value::as_object) {
                wanted.extend(refs.values().filter_map(serde_json::Value::as_str).filter(|id| !self.text_cache.contains_key(*id)).map(str::to_string));
            }
            decisions.push(stored);
        }
        self.fetch_texts(wanted)?;
        rows.iter()
            .zip(decisions)
            .map(|(row, mut stored)| {
                if let Some(serde_json::Value::Object(refs)) = stored.as_object_mut().and_then(|o| o.remove(SHARED_KEY)) {
                    for (field, id) in refs {
                        let id = id.as_str().unwrap_or_default();
                        let part = self.text_cache.get(id).cloned().ok_or_else(|| bad("decision", &format!("its shared text {id} is not in the record")))?;
                        if let Some(obj) = stored.as_object_mut() {
                            obj.insert(field, part);
                        }
                    }
                }
                let text = |i: usize| row.get(i).and_then(Val::as_text).unwrap_or_default().to_string();
                Ok(DecisionRecord {
                    decision_id: text(0),
                    decided_at: from_micros(row.get(1).and_then(Val::as_int).unwrap_or_default()),
                    today: NaiveDate::parse_from_str(&text(2), "%Y-%m-%d").map_err(|e| bad("date", &e))?,
                    facts: serde_json::from_str(&text(3)).map_err(|e| bad("facts", &e))?,
                    decision: serde_json::from_value(stored).map_err(|e| bad("decision", &e))?,
                    caller: text(5),
                    case_ref_hash: row.get(6).and_then(Val::as_text).map(str::to_string),
                })
            })
            .collect()
    }

    /// Reads the shared texts `ids` into the cache (100 a query).
    fn fetch_texts(&mut self, mut ids: Vec<String>) -> Result<(), RecordError> {
        ids.sort();
        ids.dedup();
        if self.text_cache.len() + ids.len() > TEXTS_REMEMBERED {
            self.text_cache.clear();
        }
        for chunk in ids.chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let params: Vec<Val> = chunk.iter().map(Val::text).collect();
            let sql = format!("SELECT id, body FROM decision_texts WHERE id IN ({})", marks.join(", "));
            for row in self.sql.query(&sql, &params)? {
                let (Some(id), Some(text)) = (row.first().and_then(Val::as_text), row.get(1).and_then(Val::as_text)) else { continue };
                let part = serde_json::from_str(text).map_err(|e| bad("decision text", &e))?;
                self.text_cache.insert(id.to_string(), part);
            }
        }
        Ok(())
    }

    /// The migration versions applied.
    pub fn applied(&mut self) -> Result<Vec<i64>, RecordError> {
        Ok(self.sql.query("SELECT version FROM record_migrations ORDER BY version", &[])?.iter().filter_map(|r| r[0].as_int()).collect())
    }

    fn migrate(&mut self) -> Result<(), RecordError> {
        self.transaction(|db| {
            db.sql.lock(MIGRATION_LOCK)?;
            db.sql.batch("CREATE TABLE IF NOT EXISTS record_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")?;
            let applied = db.applied()?;
            for (version, name, statements) in MIGRATIONS {
                if applied.contains(version) {
                    continue;
                }
                db.sql.batch(statements)?;
                db.sql.execute(
                    "INSERT INTO record_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[Val::int(*version), Val::text(*name), Val::int(micros(crate::clock::now()))],
                )?;
                tracing::info!(version, name, "decision record migrated");
            }
            Ok(())
        })
    }

    /// Inserts decisions and adds refusal counts (inside the caller's transaction). A decision
    /// already recorded (same id) is left as it is.
    pub fn insert(&mut self, records: &[&DecisionRecord], refusals: &[(RefusalKey, u64)]) -> Result<(), RecordError> {
        let rows = records.iter().map(|r| Row::encode(r)).collect::<Result<Vec<_>, _>>()?;
        self.insert_rows(&rows, refusals)
    }

    /// [`Db::insert`] for decisions already encoded (the group-commit writer has its callers
    /// encode their own, so the one writing thread only inserts).
    ///
    /// Rows go in with at most three statement shapes — [`ROWS_PER_INSERT`] rows, 8 rows and 1
    /// row — each prepared once per connection and then reused: one round trip for many
    /// decisions on PostgreSQL, and no SQL text to build and parse per batch on SQLite.
    pub fn insert_rows<R: std::borrow::Borrow<Row>>(&mut self, rows: &[R], refusals: &[(RefusalKey, u64)]) -> Result<(), RecordError> {
        for row in rows {
            for (id, text) in &row.borrow().texts {
                if self.known_texts.contains(id) || self.pending_texts.contains(id) {
                    continue;
                }
                self.sql.execute("INSERT INTO decision_texts (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", &[Val::text(id), Val::text(text)])?;
                self.pending_texts.insert(id.clone());
            }
        }
        let mut rest = rows;
        while !rest.is_empty() {
            let n = [ROWS_PER_INSERT, 8, 1].into_iter().find(|&n| rest.len() >= n).unwrap_or(1);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut params = Vec::with_capacity(n * Row::COLUMNS);
            for r in chunk {
                r.borrow().params(&mut params);
            }
            self.sql.execute(insert_sql(n), &params)?;
        }
        for (k, n) in refusals {
            self.sql.execute(
                "INSERT INTO refusals (day, partnership, kind, code, count) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (day, partnership, kind, code) DO UPDATE SET count = refusals.count + excluded.count",
                &[Val::text(k.day.format("%Y-%m-%d").to_string()), Val::text(&k.partnership), Val::text(&k.kind), Val::text(&k.code), Val::int(i64::try_from(*n).unwrap_or(i64::MAX))],
            )?;
        }
        Ok(())
    }

    /// The decision with id `id`.
    pub fn get(&mut self, id: &str) -> Result<Option<DecisionRecord>, RecordError> {
        let rows = self.sql.query(&format!("SELECT {COLUMNS} FROM decisions WHERE decision_id = $1"), &[Val::text(id)])?;
        Ok(self.records(&rows)?.pop())
    }

    /// Decisions matching `filter`, newest first, `size` at most per page, from `token`.
    pub fn list(&mut self, filter: &Filter, size: usize, token: Option<&str>) -> Result<Page, RecordError> {
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        let mut add = |clause: &str, v: Val, params: &mut Vec<Val>| {
            params.push(v);
            clauses.push(clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(p) = &filter.partnership {
            add("partnership = ?", Val::text(p), &mut params);
        }
        if let Some(k) = &filter.kind {
            add("kind = ?", Val::text(k), &mut params);
        }
        if let Some(o) = &filter.outcome {
            add("outcome = ?", Val::text(o), &mut params);
        }
        if let Some(h) = &filter.case_ref_hash {
            add("case_ref_hash = ?", Val::text(h), &mut params);
        }
        if let Some(t) = filter.after {
            add("decided_at >= ?", Val::int(micros(t)), &mut params);
        }
        if let Some(t) = filter.before {
            add("decided_at < ?", Val::int(micros(t)), &mut params);
        }
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let (at, id) = token
                .split_once(':')
                .and_then(|(a, id)| a.parse::<i64>().ok().map(|a| (a, id.to_string())))
                .ok_or_else(|| RecordError::InvalidArgument("page_token is not a token this service gave".into()))?;
            params.push(Val::int(at));
            let n = params.len();
            params.push(Val::text(id));
            clauses.push(format!("(decided_at < ${n} OR (decided_at = ${n} AND decision_id < ${}))", n + 1));
        }
        let size = size.clamp(1, 1000);
        let where_ = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!("SELECT {COLUMNS} FROM decisions {where_} ORDER BY decided_at DESC, decision_id DESC LIMIT {}", size + 1);
        let rows = self.sql.query(&sql, &params)?;
        let mut records = self.records(&rows)?;
        let next = if records.len() > size {
            records.truncate(size);
            records.last().map(|r| format!("{}:{}", micros(r.decided_at), r.decision_id))
        } else {
            None
        };
        Ok(Page { records, next })
    }

    /// Decisions (of `partnership`, or all) decided at or after `since`, oldest first, at most
    /// `limit`.
    pub fn since(&mut self, partnership: Option<&str>, since: DateTime<Utc>, limit: usize) -> Result<Vec<DecisionRecord>, RecordError> {
        let (sql, params) = match partnership {
            Some(p) => (
                format!("SELECT {COLUMNS} FROM decisions WHERE partnership = $1 AND decided_at >= $2 ORDER BY decided_at, decision_id LIMIT {limit}"),
                vec![Val::text(p), Val::int(micros(since))],
            ),
            None => (format!("SELECT {COLUMNS} FROM decisions WHERE decided_at >= $1 ORDER BY decided_at, decision_id LIMIT {limit}"), vec![Val::int(micros(since))]),
        };
        let rows = self.sql.query(&sql, &params)?;
        self.records(&rows)
    }

    /// How many decisions are recorded with each id in `ids` (0 for one not recorded).
    pub fn count_ids(&mut self, ids: &[String]) -> Result<Vec<i64>, RecordError> {
        ids.iter()
            .map(|id| {
                let rows = self.sql.query("SELECT COUNT(*) FROM decisions WHERE decision_id = $1", &[Val::text(id)])?;
                Ok(rows.first().and_then(|r| r[0].as_int()).unwrap_or_default())
            })
            .collect()
    }

    /// Every recorded decision id.
    pub fn all_ids(&mut self) -> Result<Vec<String>, RecordError> {
        Ok(self.sql.query("SELECT decision_id FROM decisions", &[])?.iter().filter_map(|r| r[0].as_text().map(str::to_string)).collect())
    }

    /// Refusal counts: (day, partnership, kind, code, count), newest day first.
    pub fn refusals(&mut self) -> Result<Vec<(RefusalKey, i64)>, RecordError> {
        let rows = self.sql.query("SELECT day, partnership, kind, code, count FROM refusals ORDER BY day DESC, partnership, kind, code", &[])?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let day = NaiveDate::parse_from_str(r[0].as_text()?, "%Y-%m-%d").ok()?;
                let key = RefusalKey { day, partnership: r[1].as_text()?.to_string(), kind: r[2].as_text()?.to_string(), code: r[3].as_text()?.to_string() };
                Some((key, r[4].as_int().unwrap_or_default()))
            })
            .collect())
    }

    /// How many decisions (and refusal-count rows) are older than `cutoff`; with `delete`,
    /// deletes them. The revision archive is kept: it is small, and a replay of a decision still
    /// recorded may need any revision.
    pub fn purge(&mut self, cutoff: DateTime<Utc>, delete: bool) -> Result<(i64, i64), RecordError> {
        let day = cutoff.date_naive().format("%Y-%m-%d").to_string();
        let count = |db: &mut Db, sql: &str, v: Val| -> Result<i64, RecordError> {
            Ok(db.sql.query(sql, &[v])?.first().and_then(|r| r[0].as_int()).unwrap_or_default())
        };
        let decisions = count(self, "SELECT COUNT(*) FROM decisions WHERE decided_at < $1", Val::int(micros(cutoff)))?;
        let refusals = count(self, "SELECT COUNT(*) FROM refusals WHERE day < $1", Val::text(day.clone()))?;
        if delete {
            self.transaction(|db| {
                db.sql.execute("DELETE FROM decisions WHERE decided_at < $1", &[Val::int(micros(cutoff))])?;
                db.sql.execute("DELETE FROM refusals WHERE day < $1", &[Val::text(day)])?;
                Ok(())
            })?;
        }
        Ok((decisions, refusals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_migrates_once_and_reopens() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = Target::Sqlite(dir.path().join("r.sqlite"));
        let mut db = Db::open(&target).expect("open");
        assert_eq!(db.applied().expect("applied"), vec![1, 2]);
        drop(db);
        let mut db = Db::open(&target).expect("reopen");
        assert_eq!(db.applied().expect("applied"), vec![1, 2]);
        assert!(db.get("nope").expect("get").is_none());
        let page = db.list(&Filter::default(), 10, None).expect("list");
        assert!(page.records.is_empty() && page.next.is_none());
        assert!(matches!(db.list(&Filter::default(), 10, Some("garbage")), Err(RecordError::InvalidArgument(_))));
    }

    fn record(id: &str, outcome: &str, at: DateTime<Utc>) -> DecisionRecord {
        DecisionRecord {
            decision_id: id.into(),
            decided_at: at,
            today: at.date_naive(),
            facts: serde_json::json!({"age": 14}),
            decision: crate::model::Decision {
                partnership: "york".into(),
                kind: "child_invitation".into(),
                outcome: outcome.into(),
                summary: "s".into(),
                reasons: Vec::new(),
                actions: Vec::new(),
                rules_revision: "r1".into(),
                as_of_defaulted: None,
                details: Default::default(),
            },
            caller: "anonymous".into(),
            case_ref_hash: Some("h".into()),
        }
    }

    #[test]
    fn sqlite_insert_get_list_page_and_purge() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut db = Db::open(&Target::Sqlite(dir.path().join("r.sqlite"))).expect("open");
        let now = chrono::SubsecRound::trunc_subsecs(crate::clock::now(), 6);
        let old = now - chrono::Duration::days(400);
        let rows: Vec<DecisionRecord> = (0..130).map(|i| record(&format!("id-{i:03}"), if i % 2 == 0 { "invite" } else { "represent_views" }, now - chrono::Duration::seconds(i))).collect();
        let refs: Vec<&DecisionRecord> = rows.iter().collect();
        let refusal = RefusalKey { day: now.date_naive(), partnership: "york".into(), kind: "child_invitation".into(), code: "INVALID_ARGUMENT".into() };
        db.transaction(|db| db.insert(&refs, &[(refusal.clone(), 2)])).expect("insert");
        // The same ids again change nothing; refusal counts add up.
        db.transaction(|db| db.insert(&refs[..3], &[(refusal.clone(), 1)])).expect("insert again");
        let very_old = record("old", "invite", old);
        db.transaction(|db| db.insert(&[&very_old], &[])).expect("insert old");
        assert_eq!(db.all_ids().expect("ids").len(), 131);
        assert_eq!(db.get("id-007").expect("get").expect("found"), rows[7]);
        assert_eq!(db.refusals().expect("refusals"), vec![(refusal, 3)]);

        let filter = Filter { outcome: Some("invite".into()), after: Some(now - chrono::Duration::days(1)), ..Filter::default() };
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let page = db.list(&filter, 20, token.as_deref()).expect("page");
            seen.extend(page.records.iter().map(|r| r.decision_id.clone()));
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen.len(), 65, "every even one, once");
        assert_eq!(seen[0], "id-000", "newest first");
        assert_eq!(db.purge(now - chrono::Duration::days(365), false).expect("dry run"), (1, 0));
        assert_eq!(db.all_ids().expect("ids").len(), 131, "a dry run deletes nothing");
        db.purge(now - chrono::Duration::days(365), true).expect("purge");
        assert!(db.get("old").expect("get").is_none());
        assert_eq!(db.all_ids().expect("ids").len(), 130);
    }

    #[test]
    fn wording_is_stored_once_and_put_back_on_reading() {
        use crate::model::{Action, Citation, Reason};
        let dir = tempfile::tempdir().expect("tmp");
        let mut db = Db::open(&Target::Sqlite(dir.path().join("r.sqlite"))).expect("open");
        let now = chrono::SubsecRound::trunc_subsecs(crate::clock::now(), 6);
        let with_wording = |id: &str, due: Option<NaiveDate>| {
            let mut r = record(id, "invite", now);
            r.decision.summary = "The child is invited to the conference and can bring someone to support them.".into();
            r.decision.reasons = vec![Reason {
                rule_id: "york.child.invite".into(),
                text: "A child of twelve or over who understands what the conference is about is invited.".into(),
                citation: Citation { document: "Child protection conferences: a guide for parents".into(), section: "Children and young people".into(), assumption: false },
            }];
            r.decision.actions = vec![Action { code: "invite_child".into(), description: "Invite the child in writing.".into(), due_date: due, responsible: "conference_chair".into() }];
            r
        };
        let a = with_wording("a", None);
        let b = with_wording("b", None);
        let c = with_wording("c", NaiveDate::from_ymd_opt(2027, 1, 4));
        // A transaction that fails writes nothing, and does not leave its texts taken as known.
        let failed = db.transaction(|db| {
            db.insert(&[&a], &[])?;
            Err::<(), _>(RecordError::Unavailable("fails".into()))
        });
        assert!(failed.is_err());
        db.transaction(|db| db.insert(&[&a, &b], &[])).expect("insert");
        db.transaction(|db| db.insert(&[&c], &[])).expect("insert");

        // Read back whole, as written.
        assert_eq!(db.get("a").expect("get"), Some(a.clone()));
        assert_eq!(db.get("c").expect("get"), Some(c.clone()));
        let mut fresh = Db::open(&Target::Sqlite(dir.path().join("r.sqlite"))).expect("reopen");
        assert_eq!(fresh.get("b").expect("get"), Some(b.clone()), "a new connection reads the texts from the database");
        assert_eq!(fresh.since(None, now - chrono::Duration::days(1), 10).expect("since").len(), 3);

        // The rows hold references, the wording is there once: summary, reasons and the two
        // action lists (one with a due date) — four texts for three decisions.
        let stored = db.sql.query("SELECT decision FROM decisions WHERE decision_id = $1", &[Val::text("a")]).expect("row");
        let stored = stored[0][0].as_text().expect("text").to_string();
        assert!(!stored.contains("twelve") && stored.contains(SHARED_KEY), "{stored}");
        let texts = db.sql.query("SELECT COUNT(*) FROM decision_texts", &[]).expect("count");
        assert_eq!(texts[0][0].as_int(), Some(4));

        // A row written before the texts were shared (the whole decision inline) reads as it was.
        let mut old = with_wording("old", None);
        old.decision_id = "old".into();
        let whole = serde_json::to_string(&old.decision).expect("json");
        db.sql
            .execute(
                "INSERT INTO decisions (decision_id, partnership, kind, outcome, revision, decided_at, today, case_ref_hash, caller, facts, decision) \
                 VALUES ($1, 'york', 'child_invitation', 'invite', 'r1', $2, $3, NULL, 'anonymous', '{\"age\":14}', $4)",
                &[Val::text("old"), Val::int(micros(now)), Val::text(now.date_naive().format("%Y-%m-%d").to_string()), Val::text(whole)],
            )
            .expect("old row");
        old.case_ref_hash = None;
        assert_eq!(db.get("old").expect("get"), Some(old));
    }
}
